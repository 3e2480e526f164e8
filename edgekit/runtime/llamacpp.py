"""llama.cpp backend (through llama-cpp-python), behind the Backend Protocol.

The file is validated with the ``gguf`` reader first (``gguf_check``), so a truncated or corrupt
file gives a clear error instead of crashing the process inside llama.cpp.

Generation is ``Llama.generate`` unchanged, on a context opened with ``logits_all=False``: with it
on, llama-cpp-python copies a full vocab row into ``Llama.scores`` after every decoded token, which
cost about 4 % of decode speed. ``logits()`` (all positions, for verification and ``logprobs``) asks
llama.cpp for every row itself through the C API (``llama_batch_init`` with each token's output flag
set, ``llama_decode``, ``llama_get_logits``), so both needs share one context.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import BackendUnavailable, EdgekitError, InputError
from edgekit.runtime.base import ModelInfo, SamplingParams
from edgekit.runtime.gguf_check import check_gguf
from edgekit.runtime.llamacpp_buffers import weight_buffers
from edgekit.runtime.llamacpp_probe import probe_once, templates_off

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: pick a random seed

# general.file_type (llama_ftype) -> level name
FILE_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    7: "Q8_0",
    12: "Q3_K_M",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


class LlamaCppBackend:
    """A GGUF file loaded by llama.cpp. ``n_gpu_layers`` > 0 offloads layers when built with CUDA."""

    def __init__(
        self,
        path: str | Path,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        verbose: bool = False,
        kv_f32: bool = False,
        **_: object,
    ):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendUnavailable(
                "the llama.cpp backend needs llama-cpp-python: pip install llama-cpp-python"
            ) from exc
        path = Path(path)
        meta = check_gguf(path)
        extra_buffers = probe_once(path)  # an abort inside llama.cpp ends a throw-away child, not this process
        train_ctx = int(meta.get("context_length") or 2048)
        try:
            # edgekit renders chat templates itself, with limits; extra buffers only where they work here
            with templates_off(), weight_buffers(extra_buffers):
                self._llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx or min(train_ctx, 4096),
                    n_threads=n_threads,
                    n_gpu_layers=n_gpu_layers,
                    n_batch=n_batch,
                    logits_all=False,  # see the module docstring: logits() asks for all rows itself
                    verbose=verbose,
                    seed=0,
                    **({"type_k": 0, "type_v": 0} if kv_f32 else {}),  # GGML_TYPE_F32: exact parity (default f16)
                )
        except (ValueError, RuntimeError) as exc:  # llama.cpp refused the file (it logs why; the wrapper does not)
            raise InputError(path, f"llama.cpp could not load this GGUF file ({exc})") from None
        self.info = ModelInfo(
            backend="llama.cpp",
            format="gguf",
            path=str(path),
            quantization=FILE_TYPE_NAMES.get(int(meta.get("file_type", -1)), str(meta.get("file_type"))),
            parameters=int(meta["parameters"]),
            file_size=path.stat().st_size,
            # llama.cpp pads a small context up (to 256) but the wrapper's token buffer keeps the size asked for
            n_ctx=min(self._llm.n_ctx(), len(self._llm.input_ids)),
            vocab_size=self._llm.n_vocab(),
            extra={
                "architecture": meta.get("architecture"),
                "n_gpu_layers": n_gpu_layers,
                "threads": n_threads or os.cpu_count(),
            },
        )
        self.chat_template = meta.get("chat_template")

    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=parse_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def detokenize_bytes(self, ids: Sequence[int]) -> bytes:
        return self._llm.detokenize(list(ids))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits for every position of ``ids`` from an empty cache: [len(ids), vocab] float32."""
        import llama_cpp as lc

        ids = [int(i) for i in ids]
        n_vocab, n_batch = self._llm.n_vocab(), max(1, int(self._llm.n_batch))
        if len(ids) > self.info.n_ctx:
            raise EdgekitError(f"input of {len(ids)} tokens does not fit the context of {self.info.n_ctx} tokens")
        out = np.empty((len(ids), n_vocab), dtype=np.float32)
        self._llm.reset()  # the wrapper must not believe any of its tokens are still cached
        lc.llama_memory_clear(lc.llama_get_memory(self._llm.ctx), True)
        batch = lc.llama_batch_init(n_batch, 0, 1)
        try:
            for start in range(0, len(ids), n_batch):
                chunk = ids[start : start + n_batch]
                _fill_batch(batch, chunk, start)
                if lc.llama_decode(self._llm.ctx, batch) != 0:
                    raise EdgekitError(f"llama.cpp could not evaluate tokens {start}..{start + len(chunk) - 1}")
                rows = np.ctypeslib.as_array(lc.llama_get_logits(self._llm.ctx), shape=(len(chunk) * n_vocab,))
                out[start : start + len(chunk)] = rows.reshape(len(chunk), n_vocab)
        finally:
            lc.llama_batch_free(batch)
            lc.llama_memory_clear(lc.llama_get_memory(self._llm.ctx), True)
        return out

    def generate_ids(
        self, prompt_ids: Sequence[int], max_tokens: int, sampling: SamplingParams, stop_ids: Sequence[int] = ()
    ) -> Iterator[int]:
        self._llm.reset()
        # llama.cpp's own sampler; LLAMA_DEFAULT_SEED asks it for a random seed, as seed=None does elsewhere
        self._llm.set_seed(sampling.seed if sampling.seed is not None else LLAMA_DEFAULT_SEED)
        greedy = sampling.temperature <= 0
        stops = set(stop_ids) | {self._llm.token_eos()}
        if max_tokens <= 0:
            return
        tokens = self._llm.generate(
            list(prompt_ids),
            temp=0.0 if greedy else sampling.temperature,
            top_k=1 if greedy else sampling.top_k,
            top_p=1.0 if greedy else sampling.top_p,
            min_p=0.0,  # llama-cpp-python defaults to 0.05; edgekit's sampling is top-k then top-p only
            reset=True,
        )
        for produced, token in enumerate(tokens, start=1):
            if token in stops:
                return
            yield int(token)
            if produced >= max_tokens:
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._llm.close()


def _fill_batch(batch, tokens: Sequence[int], first_pos: int) -> None:
    """Put ``tokens`` at positions ``first_pos``.. of sequence 0 in ``batch``, each asking for its logits."""
    batch.n_tokens = len(tokens)
    for j, token in enumerate(tokens):
        batch.token[j] = token
        batch.pos[j] = first_pos + j
        batch.n_seq_id[j] = 1
        batch.seq_id[j][0] = 0
        batch.logits[j] = True
