"""The one contract every runtime backend meets (llama.cpp, ONNX Runtime, PyTorch).

Verification and benchmarking talk to artifacts only through this Protocol, so a new backend is
one new module. Token ids are plain Python ints; logits are float32 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    seed: int | None = None

    def __post_init__(self) -> None:
        # one rule for every backend: nan, negative or out-of-range values are errors, never garbage
        from edgekit.runtime.input_check import check_sampling

        check_sampling(self.temperature, self.top_p, self.top_k, self.seed)


@dataclass
class ModelInfo:
    """What a loaded artifact is; shown by ``EdgeModel.info`` and recorded by benchmarks."""

    backend: str  # "llama.cpp" | "onnxruntime" | "torch"
    format: str  # "gguf" | "onnx" | "hf"
    path: str
    quantization: str  # e.g. "Q4_K_M", "int8", "fp32"
    parameters: int  # number of weights
    file_size: int  # bytes on disk of the weights
    n_ctx: int  # tokens the loaded model can attend to
    vocab_size: int
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A loaded model that can tokenize, score and generate."""

    info: ModelInfo

    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``, with BOS etc. when ``add_special_tokens`` (as the HF tokenizer does).

        User text cannot contain control tokens: ``<|im_end|>`` typed in a prompt is tokenized as
        plain text unless ``parse_special`` (used for text a chat template rendered).
        """

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are skipped."""

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits for every position of ``ids`` from a fresh state: [len(ids), vocab] float32."""

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop_ids: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yield new token ids one by one (streaming); stops at ``max_tokens`` or a stop id (not yielded)."""

    def close(self) -> None:
        """Free the model's memory; the backend is unusable afterwards."""
