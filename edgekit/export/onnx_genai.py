"""Hugging Face folder -> ONNX Runtime GenAI package, through onnxruntime-genai's model builder.

The package (``genai_config.json``, ``model.onnx`` + ``model.onnx.data``, tokenizer files) is what
ONNX Runtime GenAI apps on Android, iOS, Windows and Jetson load as it is: ``og.Model(folder)``.
edgekit adds only its sidecar ``edgekit-artifact.json`` beside those files.

Why a child process: the builder appends its own folder to ``sys.path``, prints progress on
stdout, and holds the whole model in memory while it writes; a child keeps all three out of the
caller, returns that memory when it exits, and turns any crash into one ``StageError`` that quotes
the builder's last line.

Memory (see ``BUILDER_PEAK`` and docs/onnx.md): the builder loads the checkpoint with transformers'
``dtype="auto"`` (a bf16 checkpoint stays bf16; nothing to pass) and casts each tensor to the
level's type only when it is written, so fp32 costs about 2.6x the bf16 checkpoint at 1 B weights.
int4/int8 cannot be bounded from outside: the builder turns the whole graph into one in-memory
fp32 ONNX protobuf (``ir.to_proto``) for ONNX Runtime's MatMulNBits quantizer while it still holds
the torch model, about 5.8x the bf16 checkpoint at 1 B. Preflight should use ``builder_peak_bytes``.

Families the builder cannot export correctly are named by ``unsupported_reason`` so that preflight
refuses them before any training. The builder runs through ``onnx_builder_child.py``, which gives
its Gemma 3 exporter the flat RoPE config it reads (transformers 5 nests it per attention type).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailable, ConfigError, InputError, Problem, StageError, UnsupportedModelError
from edgekit.fileio import atomic_path

GENAI_CONFIG = "genai_config.json"
BUILDER_CHILD = Path(__file__).with_name("onnx_builder_child.py")  # the builder, Gemma 3's config made flat

# Precisions the builder writes ("-p"): edgekit level -> builder precision.
LEVELS = {
    "fp32": "fp32",  # float32 weights and activations
    "fp16": "fp16",  # float16 weights and activations (CUDA, DML, WebGPU; CPU runs it slowly)
    "int8": "int8",  # MatMulNBits 8-bit weight-only, activations in the EP's float type
    "int4": "int4",  # MatMulNBits 4-bit weight-only (RTN or k-quant), block-wise scales
}

# Execution providers the builder specializes a graph for ("-e"), as named in target profiles.
PROVIDERS = {
    "cpu": "cpu",  # any CPU (x86, Arm): the phone and laptop route
    "cuda": "cuda",  # NVIDIA GPUs and Jetson (onnxruntime-genai-cuda at run time)
    "dml": "dml",  # DirectML on Windows GPUs
    "webgpu": "webgpu",  # browsers and WebGPU-capable native apps
    "trt-rtx": "NvTensorRtRtx",  # NVIDIA TensorRT for RTX
}

# Weight-only quantizer algorithms the builder offers (its ``algo_config`` extra option).
INT4_ALGOS = ("rtn", "k_quant", "default")

# HF ``architectures[0]`` values the builder has an exporter for, text decoders only (builder.py's
# dispatch, onnxruntime-genai 0.18). Vision/audio/MoE-only entries are left out on purpose.
BUILDER_ARCHITECTURES = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "SmolLM3ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "PhiForCausalLM",
        "Phi3ForCausalLM",
        "GraniteForCausalLM",
        "OlmoForCausalLM",
        "NemotronForCausalLM",
        "Ernie4_5ForCausalLM",
        "InternLM2ForCausalLM",
        "HunYuanDenseV1ForCausalLM",
    }
)


# Peak RSS of one level's export (this process + the builder child, summed every 0.1 s) as
# fixed bytes + a multiple of the checkpoint's safetensors bytes: a line through two measurements,
# Llama-3-shaped bf16 checkpoints of 0.51 GB (0.25 B weights) and 2.47 GB (1.24 B), vocabulary
# 128,256, onnxruntime-genai 0.18, CPU provider, this 2-core x86 machine (docs/onnx.md):
#   fp32: 3.26 GB and 6.40 GB;  int4 (RTN, block 32): 5.46 GB and 14.44 GB.
# fp16 writes the same way as fp32 and int8 the same way as int4 (not measured separately).
BUILDER_PEAK = {
    "fp32": (2.45e9, 1.60),  # (fixed bytes, x checkpoint bytes)
    "fp16": (2.45e9, 1.60),
    "int4": (3.15e9, 4.57),
    "int8": (3.15e9, 4.57),
}


def builder_peak_bytes(checkpoint_bytes: int, level: str) -> int:
    """Expected peak RSS, bytes, of exporting one ``level`` from a checkpoint of ``checkpoint_bytes``
    (its safetensors files' total size): see ``BUILDER_PEAK``. The fixed part is mostly the two
    processes' runtimes and the 128 k-vocabulary embedding of the models measured."""
    fixed, per_byte = BUILDER_PEAK[level]
    return int(fixed + per_byte * checkpoint_bytes)


@dataclass(frozen=True)
class BuilderOptions:
    """How the builder writes a package. Units: ``block_size`` in weights per scale."""

    provider: str = "cpu"  # a key of PROVIDERS
    int4_algo: str = "rtn"  # one of INT4_ALGOS
    block_size: int = 32  # 16, 32, 64, 128 or 256
    accuracy_level: int | None = None  # MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8; None: builder default
    symmetric: bool = True

    def problems(self) -> list[Problem]:
        """Every invalid field, each naming the option."""
        found = []
        if self.provider not in PROVIDERS:
            found.append(Problem("export", "onnx provider", f"{self.provider!r}; choose from {', '.join(PROVIDERS)}"))
        if self.int4_algo not in INT4_ALGOS:
            found.append(Problem("export", "int4 algo", f"{self.int4_algo!r}; choose from {', '.join(INT4_ALGOS)}"))
        if self.block_size not in (16, 32, 64, 128, 256):
            found.append(Problem("export", "block_size", f"must be 16, 32, 64, 128 or 256, got {self.block_size}"))
        if self.accuracy_level is not None and self.accuracy_level not in (1, 2, 3, 4):
            found.append(Problem("export", "accuracy_level", f"must be 1, 2, 3 or 4, got {self.accuracy_level}"))
        return found

    def extra_options(self, level: str) -> list[str]:
        """The builder's ``--extra_options`` KEY=VALUE list for one level."""
        options = ["hf_token=false", "hf_remote=false"]
        if level in ("int4", "int8"):
            options += [f"block_size={self.block_size}", f"is_symmetric={str(self.symmetric).lower()}"]
            options.append(f"algo_config={self.int4_algo}")
            if self.accuracy_level is not None:
                options.append(f"accuracy_level={self.accuracy_level}")
        return options


def _get(config: Any, key: str, default: Any = None) -> Any:
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def _lm_head_lookalike(config: Any) -> str | None:
    """The builder finds the LM head as 'the Linear with vocab_size outputs'; another such Linear breaks it.

    Fused projections count with their whole width: a Phi-3 with 4 query and 2 KV heads of 64 has a
    512-row ``qkv_proj``, which with a 512-token vocabulary became the LM head (measured: mean KL
    1.29, top-1 0 %; the same model with 1 KV head exports exactly).
    """
    vocab = _get(config, "vocab_size")
    hidden, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    if not (vocab and hidden and heads):
        return None
    head_dim = _get(config, "head_dim") or hidden // heads
    q, kv, ffn = (
        heads * head_dim,
        (_get(config, "num_key_value_heads") or heads) * head_dim,
        _get(config, "intermediate_size"),
    )
    widths = {"hidden_size": hidden, "intermediate_size": ffn, "q_proj rows": q, "k/v_proj rows": kv}
    family = _family(config)
    if family is not None and family.fused_qkv:
        widths["qkv_proj rows (q + 2 × kv)"] = q + 2 * kv
    if family is not None and family.fused_gate_up and ffn:
        widths["gate_up_proj rows (2 × intermediate_size)"] = 2 * ffn
    same = [name for name, width in widths.items() if width == vocab]
    if same:
        return (
            f"{same[0]} equals vocab_size ({vocab}): onnxruntime-genai's builder takes every Linear with "
            "vocab_size outputs for the LM head and would write a wrong graph"
        )
    return None


def _family(config: Any):
    from edgekit.arch import REGISTRY

    return REGISTRY.get(_get(config, "model_type"))


def _nope_layers(config: Any) -> list[int]:
    """SmolLM3 layers without RoPE (``no_rope_layers[i] == 0``)."""
    return [i for i, flag in enumerate(_get(config, "no_rope_layers") or []) if not flag]


def unsupported_reason(config: Any) -> str | None:
    """Why onnxruntime-genai's builder cannot export this HF config (a config object or dict), else None.

    Cheap (no weights, no builder import): preflight and the architecture registry call it before
    any training. Each reason was found by forcing the builder on a random-weight tiny model of the
    family (``tests/test_onnx_families.py`` keeps checking that it still fails).
    """
    archs = _get(config, "architectures") or []
    arch = archs[0] if archs else None
    if arch not in BUILDER_ARCHITECTURES:
        return f"onnxruntime-genai's model builder has no exporter for {arch or _get(config, 'model_type')!r}"
    if arch == "SmolLM3ForCausalLM" and _nope_layers(config):
        # its SmolLM3 exporter turns RoPE from fused-in-attention to a separate op for NoPE layers
        # instead of off, and the separate op's position_ids input was already removed
        return (
            f"SmolLM3 with NoPE layers {_nope_layers(config)}: onnxruntime-genai 0.18's builder stops with "
            "KeyError 'position_ids' (it would apply RoPE there instead of none)"
        )
    return _lm_head_lookalike(config)


def _check_levels(levels: Sequence[str]) -> list[str]:
    wanted = [q.strip().lower() for q in levels if q.strip()]
    bad = [q for q in wanted if q not in LEVELS]
    if bad or not wanted:
        shown = ", ".join(bad) if bad else "(none)"
        raise ConfigError(
            [Problem("export", "quant", f"unsupported ONNX level(s) {shown}; choose from {', '.join(LEVELS)}")]
        )
    return list(dict.fromkeys(wanted))


def _check_builder() -> None:
    import importlib.util

    for module, package in (("onnxruntime_genai", "onnxruntime-genai"), ("onnx_ir", "onnx-ir")):
        if importlib.util.find_spec(module) is None:
            raise BackendUnavailable(f"ONNX export needs {package}: pip install {package}")


def _source_config(model_dir: Path) -> Any:
    """The HF config after the same folder and shape checks every export runs."""
    from edgekit.export.checks import check_shapes
    from edgekit.models import SUPPORTED_ARCHITECTURES, load_config

    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    if not (model_dir / "config.json").is_file():
        raise InputError(model_dir, "no config.json: not a Hugging Face model folder")
    config = load_config(model_dir)
    if config.model_type in SUPPORTED_ARCHITECTURES:  # weights that disagree with config.json: an input error first
        check_shapes(model_dir, config)
    reason = unsupported_reason(config)
    if reason:
        raise UnsupportedModelError(f"{model_dir}: cannot export to ONNX: {reason}")
    return config


def _run_builder(model_dir: Path, out: Path, cache: Path, level: str, options: BuilderOptions, log: Path) -> None:
    """One builder run into ``out``; its output goes to ``log``, its last line into the error."""
    command = [sys.executable, str(BUILDER_CHILD), "-i", str(model_dir), "-o", str(out)]
    command += ["-p", LEVELS[level], "-e", PROVIDERS[options.provider], "-c", str(cache)]
    command += ["--extra_options", *options.extra_options(level)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w", encoding="utf-8") as sink:
        result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0 or not (out / GENAI_CONFIG).is_file():
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip()[:300] if lines else f"exit status {result.returncode}"
        raise StageError("export-onnx", f"onnxruntime-genai's builder could not export {model_dir} to {level}: {last}")


def _package_file_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and ".onnx" in p.name)


def export_onnx_genai(
    model_dir: str | Path,
    out_dir: str | Path,
    levels: Sequence[str] = ("fp32",),
    options: BuilderOptions | None = None,
    *,
    progress: bool = True,
) -> list[Path]:
    """Export a HF folder to one ONNX Runtime GenAI package per level (``out_dir/onnx-<level>``).

    All input is checked before anything is written; each folder appears only when complete.
    """
    from edgekit.export.sidecar import write_sidecar

    model_dir = Path(model_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    options = options or BuilderOptions()
    wanted = _check_levels(levels)
    if options.problems():
        raise ConfigError(options.problems())
    config = _source_config(model_dir)
    _check_builder()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix=".onnx-builder.", dir=out_dir) as work:
        for level in wanted:
            final = out_dir / f"onnx-{level}"
            with atomic_path(final) as tmp:
                _run_builder(model_dir, tmp, Path(work) / "cache", level, options, Path(work) / f"{level}.log")
                write_sidecar(
                    tmp,
                    format="onnx",
                    quantization=level,
                    source_model=model_dir,
                    extra={
                        "architecture": config.model_type,
                        "route": "onnxruntime-genai",
                        "runtime": "onnxruntime-genai",
                        "builder": _builder_version(),
                        "execution_provider": options.provider,
                        "weights_bytes": _package_file_size(tmp),
                        **({"int4": _quant_record(options)} if level in ("int4", "int8") else {}),
                    },
                )
            if progress:
                print(f"onnx {level}: {final}", file=sys.stderr)
            written.append(final)
    return written


def _quant_record(options: BuilderOptions) -> dict[str, Any]:
    return {
        "method": "MatMulNBits",
        "algo": options.int4_algo,
        "block_size": options.block_size,
        "symmetric": options.symmetric,
        "accuracy_level": options.accuracy_level,
    }


def _builder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxruntime-genai")
    except PackageNotFoundError:  # pragma: no cover - checked before the builder runs
        return "unknown"


def is_genai_package(folder: str | Path) -> bool:
    """True when ``folder`` is an ONNX Runtime GenAI package (it has ``genai_config.json``)."""
    return (Path(folder) / GENAI_CONFIG).is_file()
