"""What to remove: ratios per structure (or a budget) turned into kept indices by score.

Sizes are rounded to the *nearest* hardware-friendly multiple (at least one): llama.cpp K-quants pack 256 weights per
super-block along a row, so every matrix's input width (hidden, intermediate, heads × head_dim)
must be a multiple of 256 for Q4_K / Q5_K / Q6_K to apply instead of a fallback type.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from edgekit.arch import keep_layers
from edgekit.prune.importance import Scores
from edgekit.prune.surgery import Keep, group_size, head_dim

STRUCTURES = ("ffn", "heads", "query_heads", "hidden")  # the width ratios a budget can scale


@dataclass(frozen=True)
class PrunePlan:
    """Fractions removed per structure; kept sizes are rounded to the nearest multiple of ``round_to``."""

    ffn: float = 0.0  # of FFN channels (gate/up/down together), in every layer
    heads: float = 0.0  # of KV groups (with their query heads), in every layer
    layers: int = 0  # whole decoder layers
    hidden: float = 0.0  # of the hidden width (embeddings, norms, every projection, lm_head)
    round_to: int = 1  # 256 keeps every row K-quant friendly
    query_heads: float = 0.0  # of the query heads inside each KV group (every group keeps the same count)

    def __post_init__(self):
        for name in STRUCTURES:
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"prune ratio {name}={value} must be in [0, 1)")
        if self.layers < 0 or self.round_to < 1:
            raise ValueError("layers must be >= 0 and round_to >= 1")


def kept_size(size: int, ratio: float, round_to: int) -> int:
    """How many of ``size`` units survive removing ``ratio``, rounded to the nearest multiple of ``round_to``
    (at least one multiple, at most ``size``; ties keep more). Nearest, not down: 768 at 0.34 keeps 512, not 256."""
    if ratio == 0:
        return size
    kept = math.floor(size * (1.0 - ratio) / round_to + 0.5) * round_to  # ties keep more (gentler)
    return min(size, max(min(round_to, size), kept))


def _kept_count(total: int, ratio: float, width: int, round_to: int) -> int:
    """Kept heads or groups (each ``width`` columns wide): the count nearest the ratio's (ties: more) whose
    width is a multiple of ``round_to``; unrounded when no count can be."""
    want = total * (1.0 - ratio)
    fitting = [n for n in range(1, total + 1) if (n * width) % round_to == 0]
    if not fitting:
        return max(1, round(want))
    return min(fitting, key=lambda n: (abs(n - want), -n))


def kept_attention(config, plan: PrunePlan) -> tuple[int, int]:
    """(KV groups kept, query heads kept per group), so num_heads stays a multiple of num_kv_heads."""
    hd, per_group = head_dim(config), group_size(config)
    groups = config.num_key_value_heads
    if plan.heads:
        groups = _kept_count(groups, plan.heads, per_group * hd, plan.round_to)
    if plan.query_heads:
        per_group = _kept_count(per_group, plan.query_heads, groups * hd, plan.round_to)
    return groups, per_group


def planned_config(config, plan: PrunePlan):
    """The config a pruned model will have (for budgets and fit checks), without touching weights."""
    new = copy.deepcopy(config)
    groups, per_group = kept_attention(config, plan)
    new.head_dim = head_dim(config)
    keep_layers(new, list(range(config.num_hidden_layers - plan.layers)))  # which ones is decided later
    new.intermediate_size = kept_size(config.intermediate_size, plan.ffn, plan.round_to)
    # transformers 5 refuses a hidden width the attention heads do not divide (even with head_dim set)
    new.hidden_size = kept_size(config.hidden_size, plan.hidden, math.lcm(plan.round_to, groups * per_group))
    new.num_key_value_heads, new.num_attention_heads = groups, groups * per_group
    return new


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values


def _in_group(head_scores: torch.Tensor, groups: torch.Tensor, per_group: int, keep: int) -> torch.Tensor:
    """[kept groups, keep] positions of the best query heads inside each kept group."""
    by_group = head_scores.reshape(-1, per_group)[groups]
    return torch.stack([_top(row, keep) for row in by_group])


def check_layers(remove: int, n_layers: int) -> None:
    """ValueError when a plan removes every layer (asked by the prune stage and by the build's preflight)."""
    if remove >= n_layers:
        raise ValueError(f"cannot remove {remove} of {n_layers} layers")


def select(scores: Scores, plan: PrunePlan, config) -> Keep:
    """Kept indices: the highest-scoring structures at the plan's sizes."""
    n = config.num_hidden_layers
    check_layers(plan.layers, n)
    layers = sorted(_top(scores.layers, n - plan.layers).tolist()) if plan.layers else list(range(n))
    shape = planned_config(config, plan)
    n_groups, q = kept_attention(config, plan)
    groups = [_top(scores.groups[i], n_groups) for i in layers]
    heads = None
    if q != group_size(config):
        if scores.heads is None:
            raise ValueError("query-head pruning needs per-head scores")
        heads = [_in_group(scores.heads[i], g, group_size(config), q) for i, g in zip(layers, groups, strict=True)]
    return Keep(
        layers=layers,
        ffn=[_top(scores.ffn[i], shape.intermediate_size) for i in layers],
        groups=groups,
        hidden=_top(scores.hidden, shape.hidden_size),
        heads=heads,
    )


def budget_plan(
    config,
    fits: Callable[[object], bool],
    structures: tuple[str, ...] = ("ffn", "hidden"),
    base: PrunePlan | None = None,
    step: float = 0.005,
) -> PrunePlan:
    """The gentlest plan that fits: one ratio r applied to every named structure, the smallest r for
    which ``fits(planned config)`` holds. ``base`` fixes round_to, layers and the other ratios.

    Raises ValueError with the closest size reached when even r ≈ 1 does not fit.
    """
    unknown = set(structures) - set(STRUCTURES)
    if not structures or unknown:
        raise ValueError(f"budget structures must be among {', '.join(STRUCTURES)}; got {', '.join(structures)}")
    base = base or PrunePlan()
    for i in range(math.ceil(0.99 / step) + 1):
        plan = replace(base, **{name: min(0.99, i * step) for name in structures})
        if fits(planned_config(config, plan)):
            return plan
    raise ValueError(f"no plan pruning {', '.join(structures)} fits; prune layers too or choose a larger budget")


def params_fit(max_params: int) -> Callable[[object], bool]:
    """Predicate: the config has at most ``max_params`` parameters."""
    from edgekit.plan import count_params

    return lambda c: count_params(c) <= max_params


def target_fit(target, level: str) -> Callable[[object], bool]:
    """Predicate: weights at ``level`` + KV cache + runtime buffers fit the target's memory budget."""
    from edgekit.plan import plan_level

    return lambda c: plan_level(c, target, level).fits
