"""Target device profiles: the schema, loading, listing and validation.

A profile is a TOML file (``targets/*.toml`` or any path). Unknown keys are errors, and every
problem in a file is reported at once, each naming the file and the dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.errors import ConfigError, InputError, Problem
from edgekit.fileio import package_data_dir, read_toml
from edgekit.formats import LEVELS, levels_for

Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    # strict: TOML has real types, so `threads = true` or `imatrix = "yes"` is a mistake, not a 1 or a True;
    # allow_inf_nan off: `memory_gb = inf` would turn every budget and speed figure into inf or an overflow
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Hardware(_Strict):
    """What the device is; figures are cited in each profile's comments."""

    device: str
    memory_gb: Positive  # total RAM (or unified memory), GB
    memory_bandwidth_gbs: Positive  # peak DRAM bandwidth, GB/s
    cpu: str
    cpu_cores: PositiveInt
    accelerator: Literal["none", "cuda", "gpu", "npu"] = "none"
    cuda_arch: str | None = None  # e.g. "sm_87"


class Budget(_Strict):
    """What the model may use and must achieve on the device."""

    memory_mb: Positive  # weights + KV cache + runtime overhead, MiB
    min_decode_tokens_per_s: Annotated[float, Field(ge=0)] = 0.0
    context_length: PositiveInt = 2048  # tokens of KV cache to plan for


class OnnxExportSettings(_Strict):
    """How onnxruntime-genai's builder writes this device's ONNX packages (``[export.onnx]``).

    The execution provider is the one the graph is specialized for (the builder's ``-e``); the
    precisions to write are ``export.onnx_ladder``.
    """

    execution_provider: Literal["cpu", "cuda", "dml", "webgpu", "trt-rtx"] = "cpu"
    int4_algo: Literal["rtn", "k_quant", "default"] = "rtn"  # weight-only quantizer (int4 and int8)
    block_size: Literal[16, 32, 64, 128, 256] = 32  # weights per scale
    accuracy_level: Literal[1, 2, 3, 4] | None = None  # MatMulNBits compute: 1 fp32, 2 fp16, 3 bf16, 4 int8

    def builder_options(self):
        """These settings as ``edgekit.export.onnx_genai.BuilderOptions``."""
        from edgekit.export.onnx_genai import BuilderOptions

        return BuilderOptions(
            provider=self.execution_provider,
            int4_algo=self.int4_algo,
            block_size=self.block_size,
            accuracy_level=self.accuracy_level,
        )


class ExportSettings(_Strict):
    """Which formats to produce and the quantization ladder to walk (smallest first)."""

    formats: Annotated[list[Literal["gguf", "onnx"]], Field(min_length=1)]
    gguf_ladder: list[str] = ["Q4_K_M", "Q5_K_M", "Q8_0"]
    onnx_ladder: list[str] = ["int4", "int8"]
    imatrix: bool = True  # compute an importance matrix for K-quants
    keep_output_tensor: str | None = None  # e.g. "Q8_0": quantize output/embeddings no lower than this
    onnx: OnnxExportSettings = OnnxExportSettings()

    @field_validator("gguf_ladder", "onnx_ladder")
    @classmethod
    def _known_levels(cls, value: list[str], info) -> list[str]:
        fmt = "gguf" if info.field_name == "gguf_ladder" else "onnx"
        known = levels_for(fmt)
        bad = [v for v in value if v not in known]
        if bad:
            raise ValueError(f"{', '.join(bad)} not a {fmt} level; choose from {', '.join(known)}")
        return value


class RuntimeSettings(_Strict):
    """How backends run on the device."""

    threads: PositiveInt
    gpu_layers: Annotated[int, Field(ge=0)] = 0  # llama.cpp layers offloaded to the GPU
    onnx_execution_provider: Literal[
        "CPUExecutionProvider",
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "XnnpackExecutionProvider",
    ] = "CPUExecutionProvider"


class Threshold(_Strict):
    max_mean_kl: Annotated[float, Field(ge=0)]  # nats per token vs the fp32 PyTorch model
    min_top1: Annotated[float, Field(ge=0, le=1)]


class VerifySettings(_Strict):
    """Verification gate; levels not listed use ``edgekit.formats`` defaults."""

    heldout_tokens: PositiveInt = 1024
    thresholds: dict[str, Threshold] = {}

    @field_validator("thresholds")
    @classmethod
    def _known(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        bad = [k for k in value if k not in LEVELS]
        if bad:
            raise ValueError(f"unknown level(s) {', '.join(bad)}; known: {', '.join(LEVELS)}")
        return value

    def threshold(self, level: str) -> Threshold:
        if level in self.thresholds:
            return self.thresholds[level]
        q = LEVELS[level]
        return Threshold(max_mean_kl=q.max_mean_kl, min_top1=q.min_top1)


class BenchSettings(_Strict):
    prompt_lengths: list[PositiveInt] = [128, 512]
    new_tokens: PositiveInt = 128
    repeats: PositiveInt = 5
    warmup: Annotated[int, Field(ge=0)] = 1


class SpeedCalibration(_Strict):
    """How close real runtimes get to the device's peaks, fitted to published runs (edgekit.predict).

    Decode efficiency = measured decode tokens/s × bytes read per token ÷ peak bandwidth; the range is
    the lowest and highest of the calibration runs. Prefill is compute-bound: effective GFLOP/s at 2
    FLOPs per weight per prompt token. ``source`` lists the runs (addresses); ``calibrated_on`` says
    on which device class they were measured (bench/published_measurements.toml holds them all).
    """

    decode_efficiency: Annotated[float, Field(gt=0, le=1)]  # llama.cpp, central (median) fraction of peak
    decode_efficiency_low: Annotated[float, Field(gt=0, le=1)]
    decode_efficiency_high: Annotated[float, Field(gt=0, le=1)]
    onnx_decode_efficiency: Annotated[float, Field(gt=0, le=1)] | None = None  # ONNX Runtime GenAI, where published
    prefill_gflops: Positive | None = None  # llama.cpp prompt processing, effective GFLOP/s
    calibrated_on: str  # device(s) and runtime of the runs the figures were fitted to
    source: str  # addresses of the published runs

    @model_validator(mode="after")
    def _ordered(self) -> SpeedCalibration:
        if not self.decode_efficiency_low <= self.decode_efficiency <= self.decode_efficiency_high:
            raise ValueError("need decode_efficiency_low <= decode_efficiency <= decode_efficiency_high")
        return self


class TargetProfile(_Strict):
    name: str
    description: str = ""
    hardware: Hardware
    budget: Budget
    export: ExportSettings
    runtime: RuntimeSettings
    verify: VerifySettings = VerifySettings()
    bench: BenchSettings = BenchSettings()
    calibration: SpeedCalibration | None = None  # None: speeds are the bare roofline, labelled as such
    source: str = Field(default="", exclude=True)  # the file it came from

    @model_validator(mode="after")
    def _threads_fit(self) -> TargetProfile:
        if self.runtime.threads > self.hardware.cpu_cores:
            raise ValueError(f"runtime.threads ({self.runtime.threads}) exceeds hardware.cpu_cores")
        return self

    @model_validator(mode="after")
    def _ladders_not_empty(self) -> TargetProfile:
        """A format that is exported needs at least one level, else ``build`` trains for nothing."""
        for fmt in self.export.formats:
            if not self.ladder(fmt):
                raise ValueError(f"export.{fmt}_ladder is empty but export.formats lists {fmt!r}")
        return self

    def ladder(self, fmt: str) -> list[str]:
        """The quantization ladder for a format (empty when the format is not exported)."""
        if fmt not in self.export.formats:
            return []
        return list(self.export.gguf_ladder if fmt == "gguf" else self.export.onnx_ladder)


def targets_dir() -> Path:
    """Where shipped profiles live: $EDGEKIT_TARGETS_DIR, else the package's own ``profiles/``.

    The profiles are package data (the repository's ``targets/`` is a link to them), so a wheel or a
    non-editable install finds them exactly as a source checkout does.
    """
    env = os.environ.get("EDGEKIT_TARGETS_DIR")
    return Path(env) if env else package_data_dir("profiles")


def list_targets() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def resolve_target_path(name_or_path: str | Path) -> Path:
    """A profile name ("raspberry-pi-5") or a path to a TOML file -> the file's path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise InputError(path, "target profile file not found")
        return path
    candidate = targets_dir() / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise InputError(name_or_path, f"no such target; shipped targets: {', '.join(list_targets())}")
    return candidate


def _problems(source: str, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(Problem(source, key, message))
    return problems


def parse_target(data: dict, source: str) -> TargetProfile:
    """Validate a profile's data, raising one ``ConfigError`` that lists every problem."""
    try:
        return TargetProfile.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_problems(source, exc)) from None


def load_target(name_or_path: str | Path) -> TargetProfile:
    """Load and validate a target profile by name or path."""
    path = resolve_target_path(name_or_path)
    return parse_target(read_toml(path, "target profile"), str(path))
