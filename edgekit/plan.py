"""Size, memory and speed of a model at each quantization level, from its config alone.

No weights are loaded: parameters are counted from the config's shapes, file size is bits per weight
× parameters, the KV cache is sized at the target's context length, and decode speed is a
*prediction* by ``edgekit.predict``: each new token reads every weight and the whole KV cache once, at
the fraction of the target's bandwidth its runtime was calibrated to reach on published runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekit.arch import family_of
from edgekit.arch import shapes as arch_shapes
from edgekit.arch.shapes import KV_BYTES_PER_VALUE  # noqa: F401 - re-exported for callers
from edgekit.formats import level as level_info
from edgekit.targets import TargetProfile


def roofline_tokens_per_s(bandwidth_gbs: float, bytes_per_token: float) -> float:
    """Upper bound on decode tokens/s when every token reads ``bytes_per_token`` bytes at full bandwidth."""
    return bandwidth_gbs * 1e9 / bytes_per_token


RUNTIME_OVERHEAD_BYTES = 64 * 2**20  # llama.cpp context, graph and scratch buffers (measured ~40-80 MiB)
COMPUTE_BATCH = 512  # tokens per prefill batch: sizes the logits/activation buffers


@dataclass(frozen=True)
class LevelPlan:
    level: str
    format: str
    params: int
    file_bytes: int  # weights on disk and in memory
    kv_bytes: int  # KV cache at the context length
    overhead_bytes: int  # runtime buffers
    total_bytes: int  # what the process needs
    budget_bytes: int
    fits: bool
    decode_tokens_per_s: float  # calibrated prediction (edgekit.predict) unless ``basis`` says measured
    basis: str = "predicted"  # predicted | measured size (speed predicted from it) | measured
    decode_low: float | None = None  # range of the prediction, tokens/s (equal to the figure when measured)
    decode_high: float | None = None
    speed_note: str = ""  # how the speed was obtained (calibration, or "measured on ...")
    prefill_tokens_per_s: float | None = None  # prompt processing predicted from the target's compute

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(config) -> int:
    """Exact parameter count of a config of any registered family (tied embeddings counted once)."""
    return arch_shapes.count_params(family_of(config), config)


def kv_cache_bytes(config, context: int) -> int:
    """KV-cache bytes at ``context`` tokens (f16; sliding layers hold their window where llama.cpp does)."""
    return arch_shapes.kv_cache_bytes(family_of(config), config, context)


def overhead_bytes(config) -> int:
    """Fixed runtime buffers plus one prefill batch of float32 logits and activations."""
    return RUNTIME_OVERHEAD_BYTES + COMPUTE_BATCH * (config.vocab_size + 4 * config.hidden_size) * 4


def plan_level(config, target: TargetProfile, level: str, context: int | None = None) -> LevelPlan:
    """One level's numbers for ``config`` on ``target``; sizes in bytes, speed in tokens/s."""
    q = level_info(level)
    context = context or target.budget.context_length
    params = count_params(config)
    file_bytes = int(params * q.bits_per_weight / 8)
    kv = kv_cache_bytes(config, context)
    extra = overhead_bytes(config)
    total = file_bytes + kv + extra
    budget = int(target.budget.memory_mb * 2**20)
    from edgekit import predict  # predict sizes with this module's arithmetic

    speed = predict.decode(target, predict.weight_bytes_per_token(config, q.name), kv, q.format)
    pre = predict.prefill(target, params)
    return LevelPlan(
        q.name,
        q.format,
        params,
        file_bytes,
        kv,
        extra,
        total,
        budget,
        total <= budget,
        speed.tokens_per_s,
        decode_low=speed.low,
        decode_high=speed.high,
        speed_note=speed.note,
        prefill_tokens_per_s=pre.tokens_per_s if pre else None,
    )


def plan_levels(config, target: TargetProfile, context: int | None = None) -> list[LevelPlan]:
    """Every level of the target's ladders (GGUF first, then ONNX), smallest first within a format."""
    return [plan_level(config, target, lv, context) for fmt in ("gguf", "onnx") for lv in target.ladder(fmt)]
