"""Token ids -> text pieces for streaming, and stop strings that may span pieces.

Decoding one token at a time breaks multi-byte characters (a byte-level or ``<0xNN>`` token may hold
only part of a UTF-8 character) and loses the leading space SentencePiece decoders strip. So each step
decodes a short window of recent ids and yields the new suffix only once it no longer ends in U+FFFD
(the decoder's mark for an incomplete character). The window restarts at every clean boundary, keeping
the work per token constant for real text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

REPLACEMENT = "\ufffd"


def detokenize_stream(ids: Iterable[int], detokenize: Callable[[Sequence[int]], str], out: list[int]) -> Iterator[str]:
    """Yield text pieces whose concatenation is ``detokenize(all ids)``; the ids seen are appended to ``out``.

    The window is ``out[start:]``; ``out[start:mark]`` (already emitted) is decoded only as context, so
    that a SentencePiece decoder's stripped leading space stays out of the new text. The window moves on
    only at a clean boundary (new text without U+FFFD); invalid byte runs keep it open, so a character
    whose bytes straddle tokens is always decoded whole, as the full decode would.
    """
    start = mark = 0
    context = ""  # detokenize(out[start:mark])
    sent = 0  # characters emitted beyond ``context`` in the current window
    total = 0
    for token in ids:
        out.append(token)
        text = detokenize(out[start:])
        if text.endswith(REPLACEMENT) or len(text) <= len(context) + sent:
            continue
        piece = text[len(context) + sent :]
        total += len(piece)
        yield piece
        if REPLACEMENT in text[len(context) :]:
            sent += len(piece)
        else:
            start, mark, sent = mark, len(out), 0
            context = detokenize(out[start:mark])
    full = detokenize(out)  # flush an incomplete character held at the very end
    if len(full) > total:
        yield full[total:]


def normalize_stops(stop: str | Sequence[str] | None) -> list[str]:
    """``stop`` as a list of non-empty strings."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    return [s for s in stops if s]


def cut_at_stops(pieces: Iterable[str], stops: Sequence[str]) -> Iterator[str]:
    """Pass pieces through, ending before the first stop string even when it spans several pieces.

    Only the tail that could still begin a stop string is held back, so text streams without delay.
    """
    if not stops:
        yield from pieces
        return
    buf = ""
    for piece in pieces:
        buf += piece
        cut = min((i for i in (buf.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            if cut:
                yield buf[:cut]
            return
        safe = len(buf) - _held_tail(buf, stops)
        if safe > 0:
            yield buf[:safe]
            buf = buf[safe:]
    if buf:
        yield buf


def _held_tail(buf: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``buf`` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(buf)), longest, -1):
            if buf.endswith(stop[:k]):
                longest = k
                break
    return longest
