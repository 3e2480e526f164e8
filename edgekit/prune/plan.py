"""What to remove: ratios per structure (or a parameter budget) turned into kept indices by score."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgekit.prune.importance import Scores
from edgekit.prune.surgery import Keep


@dataclass(frozen=True)
class PrunePlan:
    """Fractions removed per structure; sizes are rounded down to multiples of ``round_to``."""

    ffn: float = 0.0  # of FFN channels, in every layer
    heads: float = 0.0  # of KV groups (with their query heads), in every layer
    layers: int = 0  # whole decoder layers
    hidden: float = 0.0  # of the hidden width (embeddings, norms, every projection)
    round_to: int = 1  # 256 keeps every row K-quant friendly

    def __post_init__(self):
        for name in ("ffn", "heads", "hidden"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"prune ratio {name}={value} must be in [0, 1)")
        if self.layers < 0 or self.round_to < 1:
            raise ValueError("layers must be >= 0 and round_to >= 1")


def kept_size(size: int, ratio: float, round_to: int) -> int:
    """How many of ``size`` units survive removing ``ratio``, rounded down to ``round_to`` (>= one unit)."""
    if ratio == 0:
        return size
    kept = int(size * (1.0 - ratio)) // round_to * round_to
    return max(min(round_to, size), kept)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values


def select(scores: Scores, plan: PrunePlan, config) -> Keep:
    """Kept indices: the highest-scoring structures at the plan's sizes."""
    n = config.num_hidden_layers
    if plan.layers >= n:
        raise ValueError(f"cannot remove {plan.layers} of {n} layers")
    layers = sorted(_top(scores.layers, n - plan.layers).tolist()) if plan.layers else list(range(n))
    n_ffn = kept_size(config.intermediate_size, plan.ffn, plan.round_to)
    n_groups = max(1, round(config.num_key_value_heads * (1 - plan.heads)))
    n_hidden = kept_size(config.hidden_size, plan.hidden, plan.round_to)
    return Keep(
        layers=layers,
        ffn=[_top(scores.ffn[i], n_ffn) for i in layers],
        groups=[_top(scores.groups[i], n_groups) for i in layers],
        hidden=_top(scores.hidden, n_hidden),
    )
