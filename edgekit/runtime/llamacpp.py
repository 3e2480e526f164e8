"""llama.cpp backend (through llama-cpp-python), behind the Backend Protocol.

The file is validated with the ``gguf`` reader first (``gguf_check``), so a truncated or corrupt
file gives a clear error instead of crashing the process inside llama.cpp.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import BackendUnavailable
from edgekit.runtime.base import ModelInfo, SamplingParams
from edgekit.runtime.gguf_check import check_gguf

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
        verbose: bool = False,
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
        train_ctx = int(meta.get("context_length") or 2048)
        self._llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx or min(train_ctx, 4096),
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
            logits_all=True,
            verbose=verbose,
            seed=0,
        )
        self.info = ModelInfo(
            backend="llama.cpp",
            format="gguf",
            path=str(path),
            quantization=FILE_TYPE_NAMES.get(int(meta.get("file_type", -1)), str(meta.get("file_type"))),
            parameters=int(meta["parameters"]),
            file_size=path.stat().st_size,
            n_ctx=self._llm.n_ctx(),
            vocab_size=self._llm.n_vocab(),
            extra={
                "architecture": meta.get("architecture"),
                "n_gpu_layers": n_gpu_layers,
                "threads": n_threads or os.cpu_count(),
            },
        )
        self.chat_template = meta.get("chat_template")

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def detokenize_bytes(self, ids: Sequence[int]) -> bytes:
        return self._llm.detokenize(list(ids))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self._llm.reset()
        self._llm.eval(list(ids))
        return np.array(self._llm.scores[: len(ids)], dtype=np.float32)

    def generate_ids(
        self, prompt_ids: Sequence[int], max_tokens: int, sampling: SamplingParams, stop_ids: Sequence[int] = ()
    ) -> Iterator[int]:
        self._llm.reset()
        if sampling.seed is not None:
            self._llm.set_seed(sampling.seed)
        greedy = sampling.temperature <= 0
        stops = set(stop_ids) | {self._llm.token_eos()}
        if max_tokens <= 0:
            return
        tokens = self._llm.generate(
            list(prompt_ids),
            temp=0.0 if greedy else sampling.temperature,
            top_k=1 if greedy else sampling.top_k,
            top_p=1.0 if greedy else sampling.top_p,
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
