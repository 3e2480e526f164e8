"""Choose a GGML type per tensor under a byte budget, from measured sensitivities.

llama.cpp's named mixes (Q4_K_M, Q5_K_M, ...) assign types by tensor role and layer index, the same
for every model. edgekit measures instead: for each tensor and each candidate type, how much the
model's next-token distribution moves (mean KL to the fp model, nats/token) when that one tensor is
quantized (``edgekit.export.sensitivity``). Summing per-tensor KL is the additive approximation
(small, independent perturbations add to first order); under it the best mix for a byte budget is a
multiple-choice knapsack, solved here by Lagrangian relaxation (each tensor independently minimises
KL + λ·bytes, λ searched so the total fits) and a greedy fill of the bytes left over.

Level names keep their meaning as size budgets: "Q4_K_M" means "no more bytes than llama.cpp's
Q4_K_M mix of this model". The allocator starts from that preset and leaves it only for an
estimated gain of at least ``min_gain``: when the measurements do not tell tensors apart, llama.cpp's
own mix is returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One way to store one tensor: its GGML type, whether the importance matrix is used, its cost."""

    ggml_type: str  # e.g. "Q4_K"
    imatrix: bool  # quantized with the importance matrix
    nbytes: int  # bytes of the tensor's data at this type
    kl: float  # estimated mean KL (nats/token) this choice adds

    @property
    def key(self) -> tuple[str, bool]:
        return self.ggml_type, self.imatrix


@dataclass(frozen=True)
class Allocation:
    """The chosen option per GGUF tensor name, with its estimated total KL and bytes."""

    choice: dict[str, Option]
    preset_kl: float  # the estimate for llama.cpp's mix under the same model
    budget: int  # bytes the quantized tensors may take

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.choice.values())

    @property
    def kl(self) -> float:
        return sum(o.kl for o in self.choice.values())

    def types(self) -> dict[str, str]:
        return {name: o.ggml_type for name, o in sorted(self.choice.items())}

    def imatrix_tensors(self) -> list[str]:
        return sorted(name for name, o in self.choice.items() if o.imatrix)


def tensor_bytes(ggml_type: str, n_elements: int) -> int:
    """Bytes of ``n_elements`` weights stored as ``ggml_type`` (blocks and their scales included)."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    if n_elements % block:
        raise ValueError(f"{n_elements} weights do not fill whole {ggml_type} blocks of {block}")
    return n_elements // block * size


def bpw_budget(bits_per_weight: float, n_weights: int) -> int:
    """Byte budget for ``n_weights`` quantized weights at ``bits_per_weight`` (scales included)."""
    return int(bits_per_weight * n_weights / 8)


def allocate(
    options: Mapping[str, list[Option]],
    preset: Mapping[str, tuple[str, bool]] | None,
    budget: int,
    *,
    min_gain: float = 0.01,
) -> Allocation:
    """Per-tensor options minimising total estimated KL with total bytes ≤ ``budget``.

    ``options``: GGUF tensor name -> its candidates; ``preset``: name -> (type, imatrix) of
    llama.cpp's mix, which must be among the candidates, or None for a budget without a named
    level (bits per weight). The preset is returned unless it exceeds the budget or a mix within
    budget is estimated ``min_gain`` (relative) better. Raises ValueError if even the smallest
    option of every tensor exceeds the budget.
    """
    by_key = {name: {o.key: o for o in opts} for name, opts in options.items()}
    if preset is None:  # no mix to prefer: ties go to the smaller option
        start = {name: min(opts, key=lambda o: (o.nbytes, o.kl)) for name, opts in options.items()}
    else:
        missing = [name for name in options if preset.get(name) not in by_key[name]]
        if missing:
            raise ValueError(f"preset type of {missing[0]} is not among its options")
        start = {name: by_key[name][preset[name]] for name in options}
    preset_kl = sum(o.kl for o in start.values())
    floor = sum(min(o.nbytes for o in opts) for opts in options.values())
    if floor > budget:
        raise ValueError(f"the smallest types take {floor} bytes, over the budget of {budget}")
    best = _fill(_lagrangian(options, start, budget), options, budget)
    fits = preset is not None and sum(o.nbytes for o in start.values()) <= budget
    if fits and sum(o.kl for o in best.values()) >= preset_kl * (1 - min_gain):
        best = start
    return Allocation(best, preset_kl, budget)


def _pick(opts: list[Option], lam: float, prefer: Option) -> Option:
    """argmin KL + λ·bytes; near-ties (1e-12 relative) go to the preset's option, then fewer bytes."""
    costs = [o.kl + lam * o.nbytes for o in opts]
    low = min(costs)
    tied = [o for o, c in zip(opts, costs, strict=True) if c <= low + 1e-12 * max(abs(low), 1e-30)]
    return prefer if prefer in tied else min(tied, key=lambda o: (o.nbytes, o.kl))


def _lagrangian(options: Mapping[str, list[Option]], start: dict[str, Option], budget: int) -> dict[str, Option]:
    """The cheapest-KL choice that fits, over λ (nats per byte) by bisection in log space."""

    def solve(lam: float) -> dict[str, Option]:
        return {name: _pick(opts, lam, start[name]) for name, opts in options.items()}

    def size(choice: dict[str, Option]) -> int:
        return sum(o.nbytes for o in choice.values())

    kls = [o.kl for opts in options.values() for o in opts if o.kl > 0]
    scale = (max(kls) if kls else 1.0) / max(budget, 1)
    lo, hi = math.log(scale * 1e-12), math.log(scale * 1e12)  # λ=e^hi: smallest types; e^lo: largest
    if size(solve(math.exp(hi))) > budget:
        return {name: min(opts, key=lambda o: (o.nbytes, o.kl)) for name, opts in options.items()}
    for _ in range(80):
        mid = (lo + hi) / 2
        if size(solve(math.exp(mid))) <= budget:
            hi = mid
        else:
            lo = mid
    return solve(math.exp(hi))


def _fill(choice: dict[str, Option], options: Mapping[str, list[Option]], budget: int) -> dict[str, Option]:
    """Spend the bytes the Lagrangian left: repeatedly take the upgrade with most KL saved per byte."""
    choice = dict(choice)
    left = budget - sum(o.nbytes for o in choice.values())
    while True:
        best, best_rate = None, 0.0
        for name, opts in options.items():
            now = choice[name]
            for o in opts:
                extra = o.nbytes - now.nbytes
                saved = now.kl - o.kl
                if saved <= 0 or extra > left:
                    continue
                rate = saved / extra if extra > 0 else math.inf
                if rate > best_rate:
                    best, best_rate = (name, o), rate
        if best is None:
            return choice
        left -= best[1].nbytes - choice[best[0]].nbytes
        choice[best[0]] = best[1]


def type_overrides(allocation: Allocation) -> dict[str, str]:
    """Per-tensor overrides for llama.cpp's quantizer: an anchored, escaped pattern per tensor name."""
    import re

    return {f"^{re.escape(name)}$": t for name, t in allocation.types().items()}
