"""ONNX backend: ONNX Runtime GenAI runs the package, as on-device apps do.

A folder with ``genai_config.json`` (what ``edgekit export --format onnx`` writes) is loaded with
``onnxruntime_genai.Model`` untouched; tokenization goes through ONNX Runtime GenAI's own tokenizer
(so the verify gate's tokenizer parity is the parity an app gets), and generation is its generator
loop (``append_tokens`` once for the prompt, then ``generate_next_token`` per token). Sampling is
ORT GenAI's own search (greedy, temperature, top-k, top-p, seed).

A folder without ``genai_config.json`` is an optimum graph (the older route): it opens with the raw
ONNX Runtime loop in ``edgekit.runtime.ort_loop``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BackendUnavailable, InputError
from edgekit.runtime.base import Backend, ModelInfo, SamplingParams

GENAI_CONFIG = "genai_config.json"

# Execution-provider names as users and profiles write them -> ORT GenAI's provider names.
GENAI_PROVIDERS = {
    "CPUExecutionProvider": "cpu",
    "cpu": "cpu",
    "CUDAExecutionProvider": "cuda",
    "cuda": "cuda",
    "DmlExecutionProvider": "dml",
    "dml": "dml",
    "WebGpuExecutionProvider": "WebGPU",
    "webgpu": "WebGPU",
    "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
    "trt-rtx": "NvTensorRtRtx",
    "XnnpackExecutionProvider": "XNNPACK",
    "QNNExecutionProvider": "QNN",
}


def _og():
    try:
        import onnxruntime_genai
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise BackendUnavailable(
            f"ONNX backend needs onnxruntime-genai: pip install onnxruntime-genai ({exc})"
        ) from None
    return onnxruntime_genai


def _provider_available(name: str) -> bool:
    """Whether this onnxruntime-genai build can run ``name`` (an ORT GenAI provider name)."""
    og = _og()
    checks = {"cuda": "is_cuda_available", "dml": "is_dml_available", "WebGPU": "is_webgpu_available"}
    check = getattr(og, checks.get(name, ""), None)
    if name.lower() == "cpu":
        return True
    return bool(check()) if check else True  # others: let ORT GenAI say at load time


def open_onnx(path: str | Path, **options: Any) -> Backend:
    """The backend for an ONNX folder or file: ORT GenAI for a package, the raw ORT loop otherwise."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    if (folder / GENAI_CONFIG).is_file():
        return GenaiBackend(folder, **options)
    from edgekit.runtime.ort_loop import OrtBackend

    return OrtBackend(path, **options)


def _read_genai_config(folder: Path) -> dict:
    try:
        return json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(folder / GENAI_CONFIG, f"not readable JSON ({exc})") from None


def count_weights(model_file: Path) -> int:
    """Number of weights in a graph: float initializers, plus K*N for each MatMulNBits (packed) weight."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    packed: set[str] = set()
    total = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            total += int(attrs.get("K", 0)) * int(attrs.get("N", 0))
            packed.update(node.input[1:])
    for tensor in model.graph.initializer:
        if tensor.name not in packed:
            total += int(np.prod(tensor.dims)) if tensor.dims else 1
    return total


def _config_overlay(n_threads: int | None) -> str | None:
    if not n_threads:
        return None
    options = {"intra_op_num_threads": int(n_threads), "inter_op_num_threads": 1}
    return json.dumps({"model": {"decoder": {"session_options": options}}})


class GenaiBackend:
    """An ONNX Runtime GenAI package (``genai_config.json``, model, tokenizer) loaded through ``onnxruntime_genai``."""

    def __init__(
        self,
        path: str | Path,
        n_threads: int | None = None,
        provider: str | None = None,
        n_ctx: int | None = None,
    ):
        from edgekit.runtime.onnx_check import check_onnx

        self.folder = Path(path).expanduser()
        genai = _read_genai_config(self.folder)
        decoder = genai.get("model", {}).get("decoder", {})
        self.model_file = check_onnx(self.folder / decoder.get("filename", "model.onnx"))
        og = _og()
        config = og.Config(str(self.folder))
        overlay = _config_overlay(n_threads)
        if overlay:
            config.overlay(overlay)
        self.provider = self._set_provider(config, provider, decoder)
        try:
            self._model = og.Model(config)
        except Exception as exc:  # ORT GenAI raises RuntimeError with the native message
            raise InputError(
                self.folder, f"ONNX Runtime GenAI cannot load the package: {str(exc).splitlines()[0]}"
            ) from None
        self._tokenizer = og.Tokenizer(self._model)
        self._tokenizer_specials = og.Tokenizer(self._model)
        self._tokenizer_specials.update_options(add_special_tokens="true")
        self.eos_token_ids = [int(i) for i in self._tokenizer.eos_token_ids]
        self._specials: list[str] | None = None  # control-token strings, read from tokenizer.json on first use
        self._hf_tokenizer = None  # loaded only for user text that holds a control-token string
        context = int(genai.get("model", {}).get("context_length") or 2048)
        self.n_ctx = min(int(n_ctx), context) if n_ctx else context
        self.vocab_size = int(genai.get("model", {}).get("vocab_size") or 0)
        self.info = self._make_info()

    @staticmethod
    def _set_provider(config: Any, requested: str | None, decoder: dict) -> str:
        """Apply ``requested`` and return the provider's ORT GenAI name.

        None: the provider the package names when this machine has it, else the CPU (a CUDA package
        is verified on a CPU-only build machine that way; its graph runs on both).
        """
        named = [next(iter(p)) for p in decoder.get("session_options", {}).get("provider_options", []) if p]
        if requested is None:
            if not named or _provider_available(named[0]):
                return named[0] if named else "cpu"
            requested = "cpu"
        name = GENAI_PROVIDERS.get(requested)
        if name is None:
            raise BackendUnavailable(f"unknown execution provider {requested!r}; known: {', '.join(GENAI_PROVIDERS)}")
        if name != "cpu" and not _provider_available(name):
            raise BackendUnavailable(
                f"execution provider {requested!r} is not available in this onnxruntime-genai build"
                " (for CUDA install onnxruntime-genai-cuda)"
            )
        config.clear_providers()
        if name != "cpu":
            config.append_provider(name)
        return name

    def _make_info(self) -> ModelInfo:
        from edgekit.export.sidecar import sidecar_path
        from edgekit.fileio import read_json

        sidecar = sidecar_path(self.folder)
        quant = str(read_json(sidecar).get("quantization", "unknown")) if sidecar.is_file() else "unknown"
        weights = [p for p in self.folder.iterdir() if p.is_file() and p.name.startswith(self.model_file.name)]
        return ModelInfo(
            backend="onnxruntime",
            format="onnx",
            path=str(self.folder),
            quantization=quant,
            parameters=count_weights(self.model_file),
            file_size=sum(p.stat().st_size for p in weights),
            n_ctx=self.n_ctx,
            vocab_size=self.vocab_size,
            extra={"runtime": "onnxruntime-genai", "provider": self.provider, "eos_token_ids": self.eos_token_ids},
        )

    # ---- text ----------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        """ORT GenAI's token ids. User text holding a control-token string (``parse_special`` False) goes
        through the HF tokenizer with special tokens split, since ORT GenAI's tokenizer always parses them."""
        if not parse_special and any(s in text for s in self._special_strings()):
            return self._hf_plain_ids(text, add_special_tokens)
        tokenizer = self._tokenizer_specials if add_special_tokens else self._tokenizer
        return [int(i) for i in tokenizer.encode(text)]

    def _special_strings(self) -> list[str]:
        if self._specials is None:
            path = self.folder / "tokenizer.json"
            added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens", []) if path.is_file() else []
            self._specials = [t["content"] for t in added if t.get("special") and t.get("content")]
        return self._specials

    def _hf_plain_ids(self, text: str, add_special_tokens: bool) -> list[int]:
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self.folder), trust_remote_code=False)
        ids = self._hf_tokenizer.encode(text, add_special_tokens=add_special_tokens, split_special_tokens=True)
        return [int(i) for i in ids]

    def detokenize(self, ids: Sequence[int]) -> str:
        if len(ids) == 0:
            return ""
        return self._tokenizer.decode(np.asarray(ids, dtype=np.int32))

    # ---- running ---------------------------------------------------------------------------------
    def _generator(self, max_length: int, sampling: SamplingParams | None = None, min_length: int = 0):
        og = _og()
        params = og.GeneratorParams(self._model)
        search: dict[str, Any] = {"max_length": max_length, "min_length": min_length, "do_sample": False}
        if sampling is not None and sampling.temperature > 0:
            search.update(
                do_sample=True,
                temperature=float(sampling.temperature),
                top_p=float(sampling.top_p),
                top_k=int(sampling.top_k) if sampling.top_k > 0 else max(self.vocab_size, 1),
            )
            if sampling.seed is not None:
                search["random_seed"] = int(sampling.seed)
        params.set_search_options(**search)
        return og.Generator(self._model, params)

    def _check_ids(self, ids: Sequence[int]) -> np.ndarray:
        """``ids`` as int32 after the checks ORT GenAI would fail natively on (context length, id range)."""
        if len(ids) > self.n_ctx:
            raise InputError(self.folder, f"sequence of {len(ids)} tokens exceeds the context of {self.n_ctx}")
        array = np.asarray(ids, dtype=np.int64)
        if self.vocab_size and (array.min() < 0 or array.max() >= self.vocab_size):
            bad = int(array[(array < 0) | (array >= self.vocab_size)][0])
            raise InputError(self.folder, f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        return array.astype(np.int32)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits for every position of ``ids`` from a fresh generator: [len(ids), vocab] float32."""
        if len(ids) == 0:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        array = self._check_ids(ids)
        generator = self._generator(max_length=min(len(ids) + 1, self.n_ctx))
        generator.append_tokens(array)
        return np.asarray(generator.get_output("logits")[0], dtype=np.float32)

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop_ids: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yield new ids one by one: ``append_tokens`` runs the prompt, ``generate_next_token`` each token.

        ORT GenAI ends a sequence at EOS by itself; when the caller leaves EOS out of ``stop_ids``
        (``ignore_eos``), ``min_length`` keeps it going to ``max_tokens``.
        """
        if len(prompt_ids) == 0:
            raise InputError(self.folder, "generation needs at least one prompt token")
        prompt = self._check_ids(prompt_ids)
        max_length = min(self.n_ctx, len(prompt_ids) + max_tokens)
        if max_length <= len(prompt_ids):
            return
        stops = set(stop_ids)
        ignore_eos = not set(self.eos_token_ids) <= stops
        generator = self._generator(max_length, sampling, min_length=max_length if ignore_eos else 0)
        generator.append_tokens(prompt)
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in stops:
                return
            yield token

    def close(self) -> None:
        self._tokenizer = self._tokenizer_specials = None
        self._model = None
