"""Which lever meets a device's budget: quantize, prune + recover, or distill — decided from numbers.

The literature's order of preference is by cost: quantization is nearly free; structured pruning
with a short distillation keeps the architecture and recovers well down to about half the
parameters (Minitron, Sheared-LLaMA); beyond that a new, smaller architecture trained by
distillation (Hinton et al., 2015) is the way. Quality bands are literature figures, not measurements.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.costs import estimate
from edgekit.formats import LEVELS
from edgekit.plan import LevelPlan, count_params, kv_cache_bytes, overhead_bytes, plan_levels
from edgekit.targets import TargetProfile

PRUNE_LIMIT = 0.5  # keep at least half the parameters for prune + recover (Minitron, Sheared-LLaMA)
# Expected quality cost, from published results (see docs/decision-guide.md):
QUALITY_BANDS = {
    "quantize": "Q8_0 ≈ lossless; Q5_K_M +0.5–2% perplexity; Q4_K_M +2–5% (llama.cpp k-quant tables)",
    "prune": "≈1–5 points on benchmarks at 50% of parameters after recovery (Minitron, Sheared-LLaMA)",
    "distill": "a 2–10× smaller distilled student keeps roughly 90–97% of teacher task scores (DistilBERT, MiniLLM)",
}
QUALITY_LEVELS = {
    "low": ("Q8_0", "Q6_K", "Q5_K_M"),
    "moderate": ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M"),
    "any": tuple(LEVELS),
}


@dataclass
class Option:
    path: str  # quantize | prune | distill
    level: str
    params: int  # parameters of the model that ships
    reason: str
    quality: str
    cost: dict[str, Any] | None = None


@dataclass
class Advice:
    choice: str
    options: list[Option] = field(default_factory=list)
    levels: list[LevelPlan] = field(default_factory=list)
    basis: str = "predicted"  # or "measured" when bench results were given

    def to_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "basis": self.basis,
            "options": [asdict(o) for o in self.options],
            "levels": [lv.to_dict() for lv in self.levels],
        }


def _ok(lv: LevelPlan, target: TargetProfile) -> bool:
    return lv.fits and lv.predicted_decode_tokens_per_s >= target.budget.min_decode_tokens_per_s


def max_params(config, target: TargetProfile, level: str) -> int:
    """Largest parameter count that meets both the memory budget and the speed floor at ``level``."""
    bpw = LEVELS[level].bits_per_weight
    kv, extra = kv_cache_bytes(config, target.budget.context_length), overhead_bytes(config)
    by_memory = (target.budget.memory_mb * 2**20 - kv - extra) * 8 / bpw
    floor = max(target.budget.min_decode_tokens_per_s, 1e-9)
    by_speed = (target.hardware.memory_bandwidth_gbs * 1e9 / floor - kv) * 8 / bpw
    return max(0, int(min(by_memory, by_speed)))


def advise(
    config,
    target: TargetProfile,
    *,
    quality_budget: str = "moderate",
    gpu: str = "H100",
    tokens: float | None = None,
    topk: int = 64,
    measurements: dict | None = None,
) -> Advice:
    """Rank the three paths for ``config`` on ``target``; the first option is the recommendation."""
    levels = plan_levels(config, target)
    basis = "predicted"
    if measurements:
        levels, basis = _apply_measurements(levels, measurements), "measured"
    allowed = [lv for lv in levels if lv.level in QUALITY_LEVELS[quality_budget] and lv.format == "gguf"] or levels
    good = [lv for lv in allowed if _ok(lv, target)]
    params = count_params(config)
    if good:
        best = max(good, key=lambda lv: LEVELS[lv.level].bits_per_weight)
        why = (
            f"{best.level} fits ({best.total_bytes / 2**20:,.0f} of {best.budget_bytes / 2**20:,.0f} MiB) at "
            f"{best.predicted_decode_tokens_per_s:,.1f} tokens/s ({basis}); quantization alone is enough"
        )
        return Advice(
            "quantize", [Option("quantize", best.level, params, why, QUALITY_BANDS["quantize"])], levels, basis
        )
    smallest = min(allowed, key=lambda lv: LEVELS[lv.level].bits_per_weight).level
    limit = max_params(config, target, smallest)
    ratio = limit / params
    prune_cost = estimate(params, limit, kind="recover", tokens=tokens, gpu=gpu, topk=topk).to_dict()
    distill_cost = estimate(params, limit, kind="distill", tokens=tokens, gpu=gpu, topk=topk).to_dict()
    shrink = f"{smallest} needs ≤ {limit / 1e6:,.1f}M parameters (the model has {params / 1e6:,.1f}M, {ratio:.0%})"
    prune = Option(
        "prune",
        smallest,
        limit,
        f"{shrink}: prune heads/FFN/layers to that size and recover by distillation",
        QUALITY_BANDS["prune"],
        prune_cost,
    )
    distill = Option(
        "distill",
        smallest,
        limit,
        f"{shrink}: distill into a new {_arch_hint(config, ratio)}",
        QUALITY_BANDS["distill"],
        distill_cost,
    )
    choice = "prune" if ratio >= PRUNE_LIMIT else "distill"
    options = [prune, distill] if choice == "prune" else [distill, prune]
    return Advice(choice, options, levels, basis)


def _arch_hint(config, ratio: float) -> str:
    """A smaller architecture of roughly ``ratio`` of the parameters: fewer layers and narrower."""
    c = copy.deepcopy(config)
    scale = max(ratio, 0.01) ** 0.5
    c.num_hidden_layers = max(1, round(c.num_hidden_layers * scale))
    c.hidden_size = max(256, int(c.hidden_size * scale) // 256 * 256)
    c.intermediate_size = max(256, int(c.intermediate_size * scale) // 256 * 256)
    return f"{c.num_hidden_layers}-layer, {c.hidden_size}-wide student (~{count_params(c) / 1e6:,.1f}M parameters)"


def _apply_measurements(levels: list[LevelPlan], results: dict) -> list[LevelPlan]:
    """Replace predicted size/speed by a bench results file's measured ones where a level was measured."""
    from dataclasses import replace

    measured = {r["quant"]: r for r in results.get("results", []) if "quant" in r}
    out = []
    for lv in levels:
        r = measured.get(lv.level)
        if r is None:
            out.append(lv)
            continue
        file_bytes = int(r.get("file_size_bytes", lv.file_bytes))
        total = max(int(r.get("peak_rss_bytes", 0)), file_bytes + lv.kv_bytes + lv.overhead_bytes)
        speed = float(r.get("decode_tokens_per_s", {}).get("median", lv.predicted_decode_tokens_per_s))
        out.append(
            replace(
                lv,
                file_bytes=file_bytes,
                total_bytes=total,
                fits=total <= lv.budget_bytes,
                predicted_decode_tokens_per_s=speed,
            )
        )
    return out
