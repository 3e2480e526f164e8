"""Which lever meets a device's budget: quantize, prune + recover, or distill — decided from numbers.

The literature's order of preference is by cost (docs/decision-guide.md): quantization is nearly
free; structured pruning with distillation to recover keeps the architecture and works down to about
a quarter of the parameters (Minitron, Sheared-LLaMA); beyond that a new, much smaller architecture
trained by distillation is the way (Hinton et al. 2015). "Meets the budget" means the level fits the
target's memory budget and reaches its minimum decode speed. Quality bands are literature figures,
not measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.costs import estimate
from edgekit.errors import ConfigError, Problem
from edgekit.formats import LEVELS
from edgekit.plan import LevelPlan, count_params, kv_cache_bytes, overhead_bytes, plan_levels
from edgekit.students import student_shape
from edgekit.targets import TargetProfile

# keep at least this share of the parameters for prune + recover: Minitron prunes 2-4x (15B -> 8B, 4B);
# Sheared-LLaMA 7B -> 2.7B (39%) and 1.3B (19%). Below it, distill into a new architecture.
PRUNE_LIMIT = 0.25

# llama.cpp's quantize table: perplexity increase on LLaMA-v1-7B (wikitext-2, F16 ≈ 5.91)
QUANT_PPL_DELTA = {
    "Q8_0": 0.0004,  # llama.cpp tools/quantize/quantize.cpp, QUANT_OPTIONS
    "Q6_K": 0.0008,  # same table
    "Q5_K_M": 0.0122,  # same table
    "Q5_K_S": 0.0400,  # same table
    "Q4_K_M": 0.0532,  # same table
    "Q4_K_S": 0.0992,  # same table
    "Q4_0": 0.2166,  # same table
    "Q3_K_M": 0.2496,  # same table
}
# Expected quality cost of each path, from published results (labelled as such wherever printed)
QUALITY_BANDS = {
    "prune": (
        "Minitron: 15B -> 8B (about half) kept MMLU (64.5 vs 64.2) after 94B tokens of distillation; "
        "15B -> 4B (about a quarter) lost about 6 points (58.6)"
    ),
    "distill": (
        "DistilBERT kept 97% of BERT's GLUE score at 60% of the size; a 4-10x smaller student gives up more, "
        "less with more tokens (MiniLLM and GKD report gains over plain KD)"
    ),
}
# Levels each --quality-budget allows (the ladder's other levels are skipped by the advice)
_NEAR_LOSSLESS = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "fp32", "fp16", "int8")  # ≤ ≈0.2% on LLaMA-7B
_FOUR_BIT = ("Q5_K_S", "Q4_K_M", "Q4_K_S", "int4")  # +0.7% to +1.7% perplexity on LLaMA-7B; int4: ONNX block-32
QUALITY_LEVELS = {
    "low": _NEAR_LOSSLESS,
    "moderate": _NEAR_LOSSLESS + _FOUR_BIT,
    "any": tuple(LEVELS),  # also Q4_0 and Q3_K_M: +3.7% and +4.2% on LLaMA-7B
}
CHOICES = ("quantize", "prune", "distill", "none")


@dataclass
class Option:
    path: str  # quantize | prune | distill
    level: str  # the quantization level the option ships at
    params: int  # parameters of the model that ships
    meets_budget: bool  # fits memory and reaches the speed floor at ``level``
    reason: str  # one or two sentences
    quality: str  # literature figure, not a measurement
    next_step: str | None = None  # the edgekit command or setting that starts it
    student: dict[str, int] | None = None  # distill: the suggested student shape
    cost: dict[str, Any] | None = None  # prune/distill: edgekit.costs.CostEstimate as a dict


@dataclass
class Advice:
    choice: str  # one of CHOICES; "none" when not even a tiny model fits
    options: list[Option] = field(default_factory=list)  # options[0] is the recommendation
    levels: list[LevelPlan] = field(default_factory=list)
    basis: str = "predicted"  # "measured" when a bench report replaced any prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "basis": self.basis,
            "options": [asdict(o) for o in self.options],
            "levels": [lv.to_dict() for lv in self.levels],
        }


def meets(lv: LevelPlan, target: TargetProfile) -> bool:
    """Fits the memory budget and reaches the target's minimum decode speed."""
    return lv.fits and lv.decode_tokens_per_s >= target.budget.min_decode_tokens_per_s


def max_params(config, target: TargetProfile, level: str, context: int | None = None) -> int:
    """Largest parameter count that meets both the memory budget and the speed floor at ``level``.

    Uses ``config``'s KV cache and buffers, so it is conservative for a student with fewer layers.
    """
    bpw = LEVELS[level].bits_per_weight
    kv = kv_cache_bytes(config, context or target.budget.context_length)
    by_memory = (target.budget.memory_mb * 2**20 - kv - overhead_bytes(config)) * 8 / bpw
    floor = max(target.budget.min_decode_tokens_per_s, 1e-9)
    from edgekit.predict import efficiency  # the calibrated fraction of bandwidth, as plan_levels uses

    eff = (efficiency(target, LEVELS[level].format) or (1.0,))[0]
    by_speed = (eff * target.hardware.memory_bandwidth_gbs * 1e9 / floor - kv) * 8 / bpw
    return max(0, int(min(by_memory, by_speed)))


def check_quality_budget(quality_budget: str) -> None:
    """``ConfigError`` naming --quality-budget when it is not one of QUALITY_LEVELS."""
    if quality_budget not in QUALITY_LEVELS:
        message = f"unknown quality budget {quality_budget!r}; choose from {', '.join(QUALITY_LEVELS)}"
        raise ConfigError([Problem("--quality-budget", "", message)])


@dataclass(frozen=True)
class CostSettings:
    """How prune/distill runs are priced (edgekit.costs.estimate's arguments)."""

    gpu: str = "H100"  # GPU class the hours are for
    tokens: float | None = None  # training tokens; None: the table's tokens per parameter
    topk: int = 64  # K of the teacher cache sized on disk
    sequence_level: bool = False  # the teacher also writes the training text
    compute_budget_gpu_hours: float | None = None  # say whether each run fits in it


def advise(
    config,
    target: TargetProfile,
    *,
    quality_budget: str = "moderate",
    context: int | None = None,
    costs: CostSettings = CostSettings(),
    measurements: dict | None = None,
    model: str = "MODEL",
) -> Advice:
    """Rank the paths for ``config`` on ``target``; the first option is the recommendation.

    ``measurements`` is a bench results dict (edgekit.measured); ``model`` is how commands name the model.
    """
    check_quality_budget(quality_budget)
    levels = plan_levels(config, target, context)
    basis = "predicted"
    if measurements:
        from edgekit.measured import apply_measurements

        levels = apply_measurements(levels, measurements, target)
        basis = "measured" if any(lv.basis != "predicted" for lv in levels) else "predicted"
    allowed = _allowed(levels, quality_budget)
    if not allowed:
        problem = Problem(
            target.source or target.name, "export", f"no level allowed by quality budget {quality_budget}"
        )
        raise ConfigError([problem])
    good = [lv for lv in allowed if meets(lv, target)]
    if good:
        best = max(good, key=lambda lv: LEVELS[lv.level].bits_per_weight)
        return Advice("quantize", [_quantize_option(best, target, True)], levels, basis)
    smallest = min(allowed, key=lambda lv: LEVELS[lv.level].bits_per_weight)
    limit = max_params(config, target, smallest.level, context)
    choice, options = _shrink(config, limit, _quantize_option(smallest, target, False), model, costs)
    return Advice(choice, options, levels, basis)


def _allowed(levels: list[LevelPlan], quality_budget: str) -> list[LevelPlan]:
    """The levels the quality budget allows, GGUF preferred (the ONNX ladder only when there is no GGUF)."""
    ok = [lv for lv in levels if lv.level in QUALITY_LEVELS[quality_budget]]
    return [lv for lv in ok if lv.format == "gguf"] or ok


def _quantize_option(lv: LevelPlan, target: TargetProfile, ok: bool) -> Option:
    floor = target.budget.min_decode_tokens_per_s
    speed = f"{level_speed_text(lv)} tokens/s ({level_speed_how(lv)})"
    memory = f"{lv.total_bytes / 2**20:,.0f} of {lv.budget_bytes / 2**20:,.0f} MiB"
    if ok:
        reason = (
            f"{lv.level} fits ({memory}) at {speed}, above the {floor:g} tokens/s floor; quantization alone is enough."
        )
    else:
        fails = [f"needs {memory}"] if not lv.fits else []
        if lv.decode_tokens_per_s < floor:
            fails.append(f"decodes at {speed}, below the {floor:g} tokens/s floor")
        reason = f"Even {lv.level}, the smallest level allowed, {' and '.join(fails)}."
    return Option("quantize", lv.level, lv.params, ok, reason, _quant_quality(lv.level))


def level_speed_text(lv: LevelPlan) -> str:
    """``4.39 (4.05–4.70)``: the level's speed with its range, three significant figures."""
    from edgekit.predict import Prediction

    low = lv.decode_low if lv.decode_low is not None else lv.decode_tokens_per_s
    high = lv.decode_high if lv.decode_high is not None else lv.decode_tokens_per_s
    basis = "measured" if lv.basis == "measured" else "calibrated"
    return Prediction(lv.decode_tokens_per_s, low, high, basis, lv.speed_note).text()


def level_speed_how(lv: LevelPlan) -> str:
    """How the level's speed was obtained, in a few words (the table's footer gives the calibration)."""
    if lv.basis == "measured":
        return "measured on the device"
    calibrated = "uncalibrated roofline" not in lv.speed_note and "no [calibration]" not in lv.speed_note
    how = "calibrated prediction" if calibrated else "roofline upper bound: the profile has no [calibration]"
    return f"{how} from the measured size" if lv.basis == "measured size" else how


def _quant_quality(level: str) -> str:
    if level not in QUANT_PPL_DELTA:
        return f"{level}: no figure in llama.cpp's quantize table; edgekit's verify stage measures it"
    return (
        f"{level}: +{QUANT_PPL_DELTA[level]:.4f} perplexity on LLaMA-7B (F16 ≈ 5.91) in llama.cpp's quantize table; "
        "other models differ, and edgekit's verify stage measures yours"
    )


def _shrink(config, limit: int, quantize: Option, model: str, costs: CostSettings) -> tuple[str, list[Option]]:
    """No allowed level meets the budget: prune to ``limit`` parameters or distill into a student of that size."""
    shape = student_shape(config, limit)
    if shape is None:
        quantize.reason += " Not even a 1-layer, 256-wide model with this vocabulary would; lower the context."
        return "none", [quantize]
    params = count_params(config)
    ratio = limit / params
    need = f"{quantize.level} needs ≤ {limit / 1e6:,.1f}M parameters ({ratio:.0%} of {params / 1e6:,.1f}M)"
    prune_cost, distill_cost = (
        estimate(
            params,
            student,
            kind=kind,
            tokens=costs.tokens,
            gpu=costs.gpu,
            topk=costs.topk,
            vocab_size=config.vocab_size,
            sequence_level=costs.sequence_level,
            compute_budget_gpu_hours=costs.compute_budget_gpu_hours,
        )
        for kind, student in (("recover", limit), ("distill", shape["params"]))
    )
    prune = Option(
        "prune",
        quantize.level,
        limit,
        True,
        f"{need}: prune heads, FFN channels and layers to that size, then recover by distillation from the original."
        + _over_budget(prune_cost),
        QUALITY_BANDS["prune"],
        f"edgekit prune {model} --params {limit / 1e6:.0f}M --recover-steps N",
        None,
        prune_cost.to_dict(),
    )
    distill = Option(
        "distill",
        quantize.level,
        shape["params"],
        True,
        f"{need}: distill into a new {shape['layers']}-layer, {shape['hidden']}-wide student "
        f"({shape['params'] / 1e6:,.1f}M parameters)." + _over_budget(distill_cost),
        QUALITY_BANDS["distill"],
        f"rerun plan with --write-student DIR, then: edgekit distill {model} --student DIR",
        {k: v for k, v in shape.items() if k != "params"},
        distill_cost.to_dict(),
    )
    if ratio >= PRUNE_LIMIT:
        return "prune", [prune, distill, quantize]
    return "distill", [distill, prune, quantize]


def _over_budget(cost) -> str:
    """A sentence when the option costs more than the compute budget, with what the budget does pay for."""
    if cost.within_compute_budget is not False:
        return ""
    fitting = cost.tokens_within_budget
    per_param = fitting / cost.tokens * cost.tokens_per_param
    return (
        f" At {cost.gpu_hours:,.0f} {cost.gpu} GPU-hours it is over the {cost.compute_budget_gpu_hours:,.0f}-hour "
        f"budget, which pays for {fitting / 1e9:,.2f}B tokens ({per_param:,.1f} per parameter)."
    )
