"""``EdgeModel``: the one object applications use, whatever backend runs underneath.

It adds to a ``Backend`` what every application needs and no backend should repeat: chat prompts,
EOS handling, stop strings, streaming text that never splits a character, per-token log-probabilities
and timing of the last generation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, InputError
from edgekit.quality import log_softmax
from edgekit.runtime.base import Backend, ModelInfo, SamplingParams
from edgekit.runtime.chat import ChatFormat, chat_format_of, render_chat
from edgekit.runtime.input_check import ContextOverflow, check_fits, check_max_tokens, check_text, check_token_ids
from edgekit.runtime.meta import eos_ids_of
from edgekit.runtime.textstream import cut_at_stops, detokenize_stream, normalize_stops

Prompt = str | Sequence[dict[str, str]]


@dataclass
class GenerationStats:
    """Counts and timings of the last ``generate``/``stream`` call (seconds, tokens)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    first_token_s: float = 0.0  # prompt processing + first token
    total_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens/s after the first token (the steady decode speed); 0 when fewer than two tokens."""
        decode_s = self.total_s - self.first_token_s
        return (self.generated_tokens - 1) / decode_s if self.generated_tokens > 1 and decode_s > 0 else 0.0


class ModelClosed(EdgekitError, RuntimeError):
    """A closed ``EdgeModel`` was used (a program error, reported as one line rather than a crash)."""


class EdgeModel:
    """A loaded model: ``generate``, ``stream``, ``logprobs``, ``tokenize``/``detokenize``, ``info``.

    Use as a context manager (``with edgekit.load(path) as model: ...``) or call ``close()``.
    """

    def __init__(self, backend: Backend):
        self.backend: Backend | None = backend
        self.eos_token_ids: list[int] = eos_ids_of(backend)
        self.last_stats = GenerationStats()
        self._chat_format: ChatFormat | None = None

    @property
    def info(self) -> ModelInfo:
        """Backend, format, quantization, parameters, file size (bytes), context (tokens), vocab size."""
        return self._live().info

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (with BOS when the tokenizer adds one and ``add_special_tokens``).

        ``text`` is user text: special-token text in it (``<|im_end|>``, ``</s>``) is tokenized as
        plain text, never as the control token, so a prompt cannot end a turn or fake a role.
        """
        return self._live().tokenize(check_text(text, "text"), add_special_tokens=add_special_tokens)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens skipped); ``InputError`` for an id outside the vocabulary."""
        backend = self._live()
        return backend.detokenize(check_token_ids(ids, backend.info.vocab_size))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Ids the model sees for ``prompt``: a string as tokenized, chat messages through the chat template.

        A rendered chat is tokenized without added specials, as transformers' ``apply_chat_template`` does:
        templates that want BOS write it themselves.
        """
        if isinstance(prompt, str):
            return self.tokenize(check_text(prompt, "prompt"))
        if isinstance(prompt, bytes) or not isinstance(prompt, Sequence):
            raise InputError("prompt", f"expected text or chat messages, got {type(prompt).__name__}")
        text = self.chat_prompt(prompt)
        if self.chat_format.template is None:
            return self.tokenize(text)
        # the template writes its own control tokens (<|im_start|> ...), so they are parsed here
        return self._live().tokenize(text, add_special_tokens=False, parse_special=True)

    @property
    def chat_format(self) -> ChatFormat:
        """The model's ``ChatFormat`` (template and BOS/EOS texts), found once."""
        if self._chat_format is None:
            self._chat_format = chat_format_of(self._live())
        return self._chat_format

    def chat_prompt(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text the chat template renders for ``messages``."""
        return render_chat(messages, self.chat_format, add_generation_prompt)

    def generate(
        self,
        prompt: Prompt,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        ignore_eos: bool = False,
    ) -> str:
        """Generated text for ``prompt`` (a string or chat messages). ``temperature=0`` is greedy.

        Ends at ``max_tokens``, at EOS (unless ``ignore_eos``) or before the first ``stop`` string.
        """
        stops = normalize_stops(stop)
        if stops:
            return "".join(self.stream(prompt, max_tokens, temperature, top_p, top_k, seed, stops, ignore_eos))
        ids: list[int] = []
        ids.extend(self._timed_ids(prompt, max_tokens, temperature, top_p, top_k, seed, ignore_eos))
        return self.detokenize(ids)

    def stream(
        self,
        prompt: Prompt,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        ignore_eos: bool = False,
    ) -> Iterator[str]:
        """Like ``generate`` but yields text pieces as they become final; joined they equal ``generate``'s text."""
        ids = self._timed_ids(prompt, max_tokens, temperature, top_p, top_k, seed, ignore_eos)
        seen: list[int] = []
        pieces = detokenize_stream(ids, self._live().detokenize, seen)
        try:
            yield from cut_at_stops(pieces, normalize_stops(stop))
        finally:
            pieces.close()
            ids.close()

    def generate_ids(
        self, prompt: Prompt, max_tokens: int = 128, ignore_eos: bool = False, **sampling: Any
    ) -> list[int]:
        """New token ids for ``prompt`` (greedy unless ``sampling`` says otherwise); for tests and verification."""
        p = SamplingParams(**sampling)
        return list(self._timed_ids(prompt, max_tokens, p.temperature, p.top_p, p.top_k, p.seed, ignore_eos))

    def logprobs(self, text: str) -> list[tuple[str, float]]:
        """``(token_text, log-probability)`` for each token of ``text`` after the first (natural log).

        The first token (BOS when the tokenizer adds one) has no context and is not scored.
        """
        ids = self.tokenize(text)
        if len(ids) < 2:
            return []
        if len(ids) > self.info.n_ctx:
            raise ContextOverflow("text", f"{len(ids)} tokens do not fit the model's context of {self.info.n_ctx}")
        logits = np.asarray(self._live().logits(ids), dtype=np.float32)
        logp = log_softmax(logits[:-1])
        targets = np.asarray(ids[1:])
        scores = logp[np.arange(len(targets)), targets]
        return [(self.detokenize([t]), float(s)) for t, s in zip(ids[1:], scores, strict=True)]

    def _timed_ids(
        self,
        prompt: Prompt,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        ignore_eos: bool,
    ) -> Iterator[int]:
        """The backend's id stream, recording ``last_stats`` as it goes."""
        backend = self._live()
        params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        max_tokens = check_max_tokens(max_tokens)
        ids = self.prompt_ids(prompt)
        # generation ends at the context's end on every backend, as it does on PyTorch
        max_tokens = check_fits(len(ids), max_tokens, backend.info.n_ctx)
        stats = self.last_stats = GenerationStats(prompt_tokens=len(ids))
        start = time.perf_counter()
        stop_ids = () if ignore_eos else self.eos_token_ids
        inner = backend.generate_ids(ids, max_tokens, params, stop_ids=stop_ids)
        try:
            for token in inner:
                stats.generated_tokens += 1
                if stats.generated_tokens == 1:
                    stats.first_token_s = time.perf_counter() - start
                yield token
        finally:
            stats.total_s = time.perf_counter() - start
            close = getattr(inner, "close", None)
            if close:
                close()

    def _live(self) -> Backend:
        if self.backend is None:
            raise ModelClosed("this EdgeModel is closed: load it again to use it")
        return self.backend

    def close(self) -> None:
        """Free the model; further calls raise ``ModelClosed`` (an ``EdgekitError`` and a ``RuntimeError``)."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> EdgeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.backend is None:
            return "EdgeModel(closed)"
        i = self.info
        return f"EdgeModel({i.format} {i.quantization} on {i.backend}: {i.path})"
