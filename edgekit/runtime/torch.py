"""PyTorch backend for Hugging Face model folders: the reference every exported artifact is compared with.

Generation is a plain KV-cache loop (one prefill forward, then one forward per new token) that picks
tokens with ``edgekit.runtime.sampling`` like the ONNX loop does, so greedy output equals
``model.generate(do_sample=False)`` and sampled output depends only on the seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.base import ModelInfo, SamplingParams
from edgekit.runtime.safetensors_check import check_safetensors_folder
from edgekit.runtime.sampling import make_rng, sample_next

# How ModelInfo.quantization names a torch dtype.
_DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


class TorchBackend:
    """A HF folder (safetensors only) loaded with transformers on ``device``.

    ``n_threads`` sets torch's intra-op threads for the whole process (torch has no per-model setting).
    ``n_ctx`` caps prompt + generated tokens (default: the config's ``max_position_embeddings``).
    """

    def __init__(
        self,
        path: str | Path,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ):
        import torch

        from edgekit.models import check_architecture, count_parameters, load_config, load_model, load_tokenizer

        path = Path(path)
        weights = check_safetensors_folder(path)  # before transformers maps a single byte
        config = load_config(path, trust_remote_code=trust_remote_code)
        if not trust_remote_code:
            check_architecture(config, path)
        if n_threads:
            torch.set_num_threads(int(n_threads))
        torch_dtype = getattr(torch, dtype) if dtype else None
        self.model = load_model(path, dtype=torch_dtype, device=device, trust_remote_code=trust_remote_code)
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        self.device = device
        max_ctx = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.chat_template = getattr(self.tokenizer, "chat_template", None)
        self.bos_token = self.tokenizer.bos_token
        self.eos_token = self.tokenizer.eos_token
        self.eos_token_ids = _eos_ids(self.model, self.tokenizer)
        self.info = ModelInfo(
            backend="torch",
            format="hf",
            path=str(path),
            quantization=_DTYPE_NAMES.get(str(self.model.dtype), str(self.model.dtype)),
            parameters=count_parameters(self.model),
            file_size=sum(w.stat().st_size for w in weights),
            n_ctx=min(int(n_ctx), max_ctx) if n_ctx else max_ctx,
            vocab_size=int(self.model.config.vocab_size),
            extra={"architecture": config.model_type, "device": device},
        )

    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids from the HF tokenizer (special-token text parsed only with ``parse_special``)."""
        ids = self.tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=not parse_special)
        return list(ids["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits for every position of ``ids`` in one forward pass: [len(ids), vocab] float32."""
        import torch

        self._check_fits(len(ids), 0)
        with torch.inference_mode():
            out = self.model(torch.tensor([list(ids)], device=self.device), use_cache=False)
        return out.logits[0].float().cpu().numpy()

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop_ids: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yield up to ``max_tokens`` new ids (fewer at a stop id or the context end), one forward each."""
        import torch

        self._check_fits(len(prompt_ids), 1)
        budget = min(max_tokens, self.info.n_ctx - len(prompt_ids))
        rng, stops = make_rng(sampling), set(stop_ids)
        with torch.inference_mode():
            out = self.model(torch.tensor([list(prompt_ids)], device=self.device), use_cache=True)
            for step in range(budget):
                row = out.logits[0, -1].float().cpu().numpy()
                token = sample_next(row, sampling, rng)
                if token in stops:
                    return
                yield token
                if step + 1 < budget:
                    nxt = torch.tensor([[token]], device=self.device)
                    out = self.model(nxt, past_key_values=out.past_key_values, use_cache=True)

    def _check_fits(self, n_prompt: int, n_new: int) -> None:
        if n_prompt == 0:
            raise EdgekitError("empty input: at least one token is needed")
        if n_prompt + n_new > self.info.n_ctx:
            raise EdgekitError(f"input of {n_prompt} tokens does not fit the context of {self.info.n_ctx} tokens")

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None
        self.tokenizer = None


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids from the generation config (may be a list), else the tokenizer."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
