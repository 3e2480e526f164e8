"""ONNX Runtime backend: our own KV-cache generation loop over an optimum-exported decoder.

Why not optimum's ``ORTModelForCausalLM.generate``: it goes through transformers' generation
machinery (torch tensors, logits processors, cache objects) for every token. This loop binds
inputs and outputs with IO binding, keeps the KV cache as ORT-owned ``OrtValue`` objects (each
step's ``present.N.*`` outputs are bound straight back as the next step's ``past_key_values.N.*``
inputs, no numpy copies), and reuses preallocated id/mask/position buffers. With no provider asked
for, it runs on CUDA when onnxruntime-gpu offers ``CUDAExecutionProvider`` (the cache then stays in
GPU memory and only each step's logits come back to the host), else on the CPU.

Graph contract (optimum ``text-generation-with-past``): inputs ``input_ids`` [b, s] int64,
``attention_mask`` [b, past + s] int64, optional ``position_ids`` [b, s] int64,
``past_key_values.N.key/value`` [b, kv_heads, past, head_dim]; outputs ``logits`` [b, s, vocab]
and ``present.N.key/value`` [b, kv_heads, past + s, head_dim].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import BackendUnavailable, InputError
from edgekit.runtime.base import ModelInfo, SamplingParams
from edgekit.runtime.onnx_check import check_onnx
from edgekit.runtime.sampling import make_rng, sample_next

_PAST_PREFIX = "past_key_values."
# Execution providers tried in order when none is asked for: the GPU when onnxruntime-gpu offers it.
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_PRESENT_PREFIX = "present."


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise BackendUnavailable(f"ONNX backend needs onnxruntime: pip install onnxruntime ({exc})") from None
    return onnxruntime


def pick_provider(requested: str | None, available: Sequence[str]) -> str:
    """The execution provider to use: ``requested`` if available, else the first of ``DEFAULT_PROVIDERS`` present."""
    if requested is None:
        return next((p for p in DEFAULT_PROVIDERS if p in available), "CPUExecutionProvider")
    if requested not in available:
        raise BackendUnavailable(
            f"execution provider {requested!r} is not available (have: {', '.join(available)});"
            " for CUDA install onnxruntime-gpu"
        )
    return requested


def _file_size(model_file: Path) -> int:
    """Bytes of the graph plus its external-data files (everything model.onnx* in the folder)."""
    folder = model_file.parent
    data = [
        p for p in folder.iterdir() if p.is_file() and (p.name.startswith(model_file.name) or p.suffix == ".onnx_data")
    ]
    return sum(p.stat().st_size for p in set(data) | {model_file})


def _count_parameters(model_file: Path) -> int:
    """Number of stored weights, read from the graph's initializers (external data not loaded)."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    total = 0
    for tensor in model.graph.initializer:
        n = int(np.prod(tensor.dims)) if tensor.dims else 1
        # a packed 4-bit MatMulNBits weight holds two weights per byte
        total += n * 2 if tensor.name.endswith("_int4.q") else n
    return total


class OrtBackend:
    """A loaded ONNX decoder folder (model.onnx + HF tokenizer files) on ONNX Runtime."""

    def __init__(
        self,
        path: str | Path,
        n_threads: int | None = None,
        provider: str | None = None,
        n_ctx: int | None = None,
    ):
        self.model_file = check_onnx(path)  # clear InputError before the native loader sees the file
        self.folder = self.model_file.parent
        self._session = self._make_session(n_threads, provider)
        self._tokenizer = self._load_tokenizer()
        self._read_graph()
        self.n_ctx = int(n_ctx or self._config_ctx())
        self._mask = np.ones((1, self.n_ctx), dtype=np.int64)
        self._positions = np.arange(self.n_ctx, dtype=np.int64)[None, :]
        self.info = self._make_info()

    # ---- setup -------------------------------------------------------------------------------
    def _make_session(self, n_threads: int | None, provider: str | None):
        ort = _ort()
        provider = pick_provider(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        if n_threads:
            options.intra_op_num_threads = int(n_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(self.model_file), sess_options=options, providers=[provider])
        except Exception as exc:  # ORT's Fail/InvalidGraph/NotImplemented errors
            raise InputError(
                self.model_file, f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}"
            ) from None
        self.provider = provider
        self._device = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
        return session

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.folder), trust_remote_code=False)
        except Exception as exc:
            raise InputError(self.folder, f"no usable tokenizer files beside the ONNX model ({exc})") from None

    def _read_graph(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        if "input_ids" not in inputs or "logits" not in {o.name for o in self._session.get_outputs()}:
            raise InputError(self.model_file, "not a decoder graph: needs input 'input_ids' and output 'logits'")
        self._past_names = sorted(
            (n for n in inputs if n.startswith(_PAST_PREFIX)), key=lambda n: (int(n.split(".")[1]), n)
        )
        self._present_names = [_PRESENT_PREFIX + n[len(_PAST_PREFIX) :] for n in self._past_names]
        self._has_mask = "attention_mask" in inputs
        self._has_positions = "position_ids" in inputs
        self._kv_dtype = np.float16 if any("float16" in inputs[n].type for n in self._past_names) else np.float32
        self._kv_shape = {n: inputs[n].shape for n in self._past_names}

    def _config(self) -> dict:
        from edgekit.fileio import read_json

        path = self.folder / "config.json"
        return read_json(path) if path.is_file() else {}

    def _config_ctx(self) -> int:
        return int(self._config().get("max_position_embeddings", 2048))

    def _make_info(self) -> ModelInfo:
        from edgekit.export.sidecar import sidecar_path

        quant = "fp32"
        sidecar = sidecar_path(self.folder)
        if sidecar.is_file():
            from edgekit.fileio import read_json

            quant = str(read_json(sidecar).get("quantization", quant))
        vocab = self._session.get_outputs()[0].shape[-1]
        vocab = vocab if isinstance(vocab, int) else int(self._config().get("vocab_size", len(self._tokenizer)))
        return ModelInfo(
            backend="onnxruntime",
            format="onnx",
            path=str(self.folder),
            quantization=quant,
            parameters=_count_parameters(self.model_file),
            file_size=_file_size(self.model_file),
            n_ctx=self.n_ctx,
            vocab_size=int(vocab),
            extra={"provider": self.provider, "layers": len(self._past_names) // 2},
        )

    # ---- text ----------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        ids = self._tokenizer.encode(
            text, add_special_tokens=add_special_tokens, split_special_tokens=not parse_special
        )
        return list(ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer loaded from the model folder (chat templates live here)."""
        return self._tokenizer

    # ---- running ---------------------------------------------------------------------------------
    def _empty_past(self) -> list:
        """Zero-length KV tensors [1, kv_heads, 0, head_dim] as OrtValues, one per past input."""
        ort = _ort()
        values = []
        for name in self._past_names:
            _, heads, _, dim = self._kv_shape[name]
            values.append(ort.OrtValue.ortvalue_from_numpy(np.zeros((1, heads, 0, dim), dtype=self._kv_dtype)))
        return values

    def _step(self, ids: np.ndarray, past: list, past_len: int):
        """Run one forward pass of ``ids`` [1, s] after ``past_len`` cached tokens.

        Returns (logits OrtValue [1, s, vocab], present OrtValues); ORT allocates the outputs and we
        hand them back as the next inputs, so the cache never round-trips through numpy.
        """
        total = past_len + ids.shape[1]
        if total > self.n_ctx:
            raise InputError(self.folder, f"sequence of {total} tokens exceeds the context of {self.n_ctx}")
        binding = self._session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        if self._has_mask:
            binding.bind_cpu_input("attention_mask", self._mask[:, :total])
        if self._has_positions:
            binding.bind_cpu_input("position_ids", self._positions[:, past_len:total])
        for name, value in zip(self._past_names, past, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")  # the sampler reads them on the host; the cache stays on the device
        for name in self._present_names:
            binding.bind_output(name, self._device)
        self._session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0], outputs[1:]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits for every position of ``ids`` from an empty cache: [len(ids), vocab] float32."""
        if len(ids) == 0:
            return np.zeros((0, self.info.vocab_size), dtype=np.float32)
        array = np.asarray(ids, dtype=np.int64)[None, :]
        logits, _ = self._step(array, self._empty_past(), 0)
        return np.asarray(logits.numpy()[0], dtype=np.float32)

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop_ids: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yield new ids one by one: one prefill pass over the prompt, then one pass per token."""
        if len(prompt_ids) == 0:
            raise InputError(self.folder, "generation needs at least one prompt token")
        rng = make_rng(sampling)
        stops = set(stop_ids)
        ids = np.asarray(prompt_ids, dtype=np.int64)[None, :]
        past, past_len = self._empty_past(), 0
        step_ids = np.zeros((1, 1), dtype=np.int64)  # preallocated decode input, rewritten in place
        for _ in range(max_tokens):
            if past_len + ids.shape[1] > self.n_ctx:
                return
            logits, past = self._step(ids, past, past_len)
            past_len += ids.shape[1]
            token = sample_next(logits.numpy()[0, -1], sampling, rng)
            if token in stops:
                return
            yield token
            step_ids[0, 0] = token
            ids = step_ids

    def close(self) -> None:
        self._session = None
