"""Checks on what callers hand a loaded model: sampling arguments, token ids, prompts, context room.

Each backend would otherwise react differently to the same bad value (llama.cpp aborts the process on
a token id past the vocabulary, emits garbage at ``temperature=nan`` and takes ``seed=-1`` as "random";
numpy raises on a negative seed), so ``EdgeModel`` and ``SamplingParams`` check them here, once, before
any backend sees them. Every failure is a one-line ``InputError`` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from edgekit.errors import InputError

MAX_SEED = 2**32 - 2  # llama.cpp reads 2**32 - 1 as "pick a random seed"; numpy takes any non-negative int
MIN_TEMPERATURE = 1e-3  # below this, logits / temperature overflow float32 and sampling returns garbage


class ContextOverflow(InputError):
    """The prompt does not fit the model's context (tokens); the message gives both numbers."""


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_sampling(temperature: Any, top_p: Any, top_k: Any, seed: Any) -> None:
    """``InputError`` for the first sampling argument out of range (same rule on every backend)."""
    if not _is_number(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise InputError("temperature", f"must be a finite number >= 0 (0 is greedy), got {temperature!r}")
    if 0 < temperature < MIN_TEMPERATURE:
        raise InputError("temperature", f"must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {temperature!r}")
    if not _is_number(top_p) or not math.isfinite(top_p) or not 0 <= top_p <= 1:
        raise InputError("top_p", f"must be a number from 0 to 1 (1 disables), got {top_p!r}")
    if not _is_int(top_k) or top_k < 0:
        raise InputError("top_k", f"must be an integer >= 0 (0 disables), got {top_k!r}")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= MAX_SEED):
        raise InputError("seed", f"must be an integer from 0 to {MAX_SEED}, or None for a random seed; got {seed!r}")


def check_max_tokens(max_tokens: Any) -> int:
    """``max_tokens`` as an int >= 0; ``InputError`` otherwise."""
    if not _is_int(max_tokens) or max_tokens < 0:
        raise InputError("max_tokens", f"must be an integer >= 0, got {max_tokens!r}")
    return int(max_tokens)


def check_token_ids(ids: Any, vocab_size: int, what: str = "token ids") -> list[int]:
    """``ids`` as a list of ints each in [0, vocab_size); ``InputError`` naming the first bad one.

    llama.cpp looks a token up without a bounds check and aborts the process (std::out_of_range).
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InputError(what, f"expected a sequence of integers, got {type(ids).__name__}")
    checked = []
    for i, token in enumerate(ids):
        if not _is_int(token):
            raise InputError(what, f"item {i} is {token!r}, not an integer")
        if not 0 <= token < vocab_size:
            raise InputError(what, f"item {i} is {token}, outside the vocabulary [0, {vocab_size})")
        checked.append(int(token))
    return checked


def check_text(text: Any, what: str = "prompt") -> str:
    """``text`` as a str that encodes to UTF-8 (no lone surrogates, as undecodable argv bytes become)."""
    if not isinstance(text, str):
        raise InputError(what, f"expected text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(what, f"not valid UTF-8 text (undecodable byte at character {exc.start})") from None
    return text


def check_fits(n_prompt: int, max_tokens: int, n_ctx: int) -> int:
    """Tokens that may be generated: ``max_tokens`` capped by the context room after the prompt.

    ``ContextOverflow`` when the prompt leaves no room for even one new token.
    """
    if n_prompt == 0:
        raise InputError("prompt", "empty input: at least one token is needed")
    if n_prompt >= n_ctx:
        advice = "shorten it or raise --context"
        raise ContextOverflow(
            "prompt", f"{n_prompt} tokens do not fit the model's context of {n_ctx} tokens ({advice})"
        )
    return min(max_tokens, n_ctx - n_prompt)
