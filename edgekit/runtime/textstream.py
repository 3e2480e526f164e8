"""Token ids -> text pieces for streaming, and stop strings that may span pieces.

Decoding one token at a time breaks multi-byte characters (a byte-level or ``<0xNN>`` token may hold
only part of a UTF-8 character) and loses the leading space SentencePiece decoders strip. So each step
decodes a short window of recent ids twice, with and without the newest tokens, and yields the new
suffix only once it no longer ends in U+FFFD (the decoder's mark for an incomplete character). The
window restarts after every yield, keeping the work per token constant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

REPLACEMENT = "\ufffd"


def detokenize_stream(ids: Iterable[int], detokenize: Callable[[Sequence[int]], str], out: list[int]) -> Iterator[str]:
    """Yield text pieces whose concatenation is ``detokenize(all ids)``; the ids seen are appended to ``out``."""
    prefix, read, emitted = 0, 0, 0  # window start, end of already-emitted ids, characters emitted
    for token in ids:
        out.append(token)
        before = detokenize(out[prefix:read]) if read > prefix else ""
        after = detokenize(out[prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            piece = after[len(before) :]
            emitted += len(piece)
            yield piece
            prefix, read = read, len(out)
    # Flush what is still held back (an incomplete character at the very end), checked against a full decode.
    full = detokenize(out)
    if len(full) > emitted:
        yield full[emitted:]


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
