"""Sensitivity-aware tensor types for each quantized file of an export: budgets, probe, choice, check.

Each requested file has a byte budget: a named level's is the size of llama.cpp's own mix for it
on this model ("Q4_K_M-sized"), a ``bpw`` target's is bits per weight x weights / 8. One probe
(``edgekit.export.sensitivity``) serves every budget; ``edgekit.export.allocate`` chooses types;
the chosen mix and llama.cpp's are then both measured with every tensor quantized at once, and the
chosen one is kept only if its measured KL is lower (the per-tensor sum is an approximation).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit.export.allocate import Allocation, allocate, bpw_budget, type_overrides
from edgekit.export.sensitivity import CANDIDATES, NO_IMATRIX, measure_mix, probe

ALLOCATE_METHODS = ("auto", "measure", "fisher")
# Above this many weights, ``auto`` keeps llama.cpp's own mixes (see ``auto_fallback``): the probe
# quantizes the model once per candidate type (about 6.7 bytes of candidate files per weight with
# an importance matrix) and its Fisher pass holds fp32 weights and sums (8 bytes per weight), so
# for a 1 B model ~8 GB of disk, ~10 GB of memory and tens of minutes on two cores.
AUTO_MAX_WEIGHTS = 100_000_000
CANDIDATE_BYTES_PER_WEIGHT = 6.7  # sum of CANDIDATES' sizes, imatrix and plain (Q8_0 once), ÷ 8
FISHER_BYTES_PER_WEIGHT = 8  # fp32 weights + fp32 sums; gradients are freed as they come


def auto_fallback(config) -> str | None:
    """Why ``allocate='auto'`` keeps llama.cpp's own mixes for a model of ``config`` (None: it allocates).

    Decided from the config (a model built on the meta device: no weights) before anything is
    loaded; the one-line notice states the probe's estimated cost and how to run it anyway.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    seen, n = set(), 0
    for p in model.parameters():
        if p.ndim >= 2 and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    if n <= AUTO_MAX_WEIGHTS:
        return None
    disk, memory = n * CANDIDATE_BYTES_PER_WEIGHT / 1e9, n * FISHER_BYTES_PER_WEIGHT / 1e9
    return (
        f"allocate=auto: {n / 1e9:.2f} B weights is over the {AUTO_MAX_WEIGHTS / 1e9:g} B that auto probes; the "
        f"sensitivity probe would write ~{disk:.0f} GB of candidate files and hold ~{memory:.0f} GB for its Fisher "
        "pass, so llama.cpp's own mixes are used (--allocate fisher runs the probe anyway)"
    )


@dataclass
class Mix:
    """The tensor types one file gets, and what they were chosen over."""

    label: str  # "Q4_K_M" or "4.5bpw"
    level: str  # the llama.cpp file type passed to the quantizer (types are all overridden)
    allocation: Allocation
    kept_preset: bool  # llama.cpp's own mix measured no worse, so it was kept
    info: dict[str, Any]

    @property
    def overrides(self) -> dict[str, str]:
        return type_overrides(self.allocation)

    def imatrix_subset(self, imatrix: dict | None) -> dict | None:
        """The importance matrix restricted to the tensors whose choice uses it."""
        if not imatrix:
            return None
        return {k: v for k, v in imatrix.items() if k in set(self.allocation.imatrix_tensors())} or None


def level_for_bpw(bpw: float) -> str:
    """Named GGUF level whose default gate applies to a file of ``bpw`` bits per weight: the largest
    named mix no bigger (the lowest one for budgets under every mix)."""
    from edgekit.formats import LEVELS

    named = sorted((q.bits_per_weight, q.name) for q in LEVELS.values() if q.format == "gguf" and q.k_quant)
    fitting = [name for bits, name in named if bits <= bpw + 1e-9]
    return fitting[-1] if fitting else named[0][1]


def bpw_label(bpw: float) -> str:
    return f"{bpw:g}bpw"


def preset_of(base: Path, level: str, imatrix: dict | None, fixed: dict[str, str], workdir: Path):
    """llama.cpp's own mix for ``level``: {GGUF weight name: (GGML type, imatrix used)} and its path."""
    import gguf

    from edgekit.export.gguf import IMATRIX_LEVELS
    from edgekit.export.quantize import quantize_gguf

    use = imatrix if level in IMATRIX_LEVELS else None
    path = quantize_gguf(base, workdir / f"preset-{level}.gguf", level, imatrix=use, type_overrides=fixed)
    types = {}
    for t in gguf.GGUFReader(path).tensors:
        if len(t.shape) >= 2 and t.name != "rope_freqs.weight":
            kind = gguf.GGMLQuantizationType(t.tensor_type).name
            types[t.name] = (kind, bool(use) and kind not in NO_IMATRIX)
    return types


def plan_mixes(
    model,
    base: Path,
    levels: list[str],
    bpws: list[float],
    rows: torch.Tensor,
    *,
    imatrix: dict | None,
    fixed: dict[str, str] | None = None,
    method: str = "auto",
    workdir: Path,
) -> dict[str, Mix]:
    """{label: Mix} for every quantized level and bits-per-weight target, from the F32 GGUF ``base``.

    ``fixed`` (the user's --tensor-type overrides) are constraints: a tensor they match keeps their
    type. ``rows`` [n, seq] are the calibration tokens for the probe and the final check.
    """
    started = time.perf_counter()
    fixed = fixed or {}
    _check_bpw(base, bpws)
    presets = {level: preset_of(base, level, imatrix, fixed, workdir) for level in levels}
    types = list(dict.fromkeys([*CANDIDATES, *fixed.values(), *(t for p in presets.values() for t, _ in p.values())]))
    always = {t for t in types if t not in CANDIDATES} | {t.upper() for t in fixed.values()}
    result = probe(model, base, rows, imatrix=imatrix, types=types, method=method, workdir=workdir, always=always)
    options = {name: _constrained(name, opts, fixed) for name, opts in result.options.items()}
    probe_seconds = round(time.perf_counter() - started, 1)
    mixes = {}
    budgets = [(level, level, presets[level], None) for level in levels]
    budgets += [(bpw_label(b), level_for_bpw(b), None, b) for b in bpws]
    for label, level, preset, bpw in budgets:
        if preset is not None:
            budget = sum(o.nbytes for name, o in _lookup(options, preset).items())
        else:
            budget = bpw_budget(bpw, sum(result.n_weights.values()))
        chosen = allocate(options, preset, budget)
        info = {
            "method": result.method,
            "calibration_tokens": result.tokens,
            "budget_bytes": budget,
            "bytes": chosen.nbytes,
            "estimated_kl": chosen.kl,
            "probe_seconds": probe_seconds,
        }
        kept = False
        if preset is not None:
            info["preset_estimated_kl"] = chosen.preset_kl
            own = {name: o.key for name, o in chosen.choice.items()}
            info["measured_kl"] = measure_mix(model, rows, base, result, own)
            info["preset_measured_kl"] = (
                measure_mix(model, rows, base, result, preset) if own != preset else info["measured_kl"]
            )
            if own != preset and info["preset_measured_kl"] <= info["measured_kl"]:
                kept = True
                chosen = Allocation(_lookup(options, preset), chosen.preset_kl, budget)
        else:
            info["bits_per_weight"] = bpw
            info["measured_kl"] = measure_mix(model, rows, base, result, {n: o.key for n, o in chosen.choice.items()})
        mixes[label] = Mix(label, level, chosen, kept, info)
    return mixes


def smallest_bpw(base: Path) -> float:
    """Bits per weight of the smallest candidate mix of the F32 GGUF ``base``: every weight at the
    smallest candidate type its row length allows (4.5 where K-quants' 256-weight rows do not fit)."""
    import gguf

    from edgekit.export.allocate import tensor_bytes

    total_bytes = total_weights = 0
    for t in gguf.GGUFReader(base).tensors:
        if len(t.shape) < 2 or t.name == "rope_freqs.weight":
            continue
        row, n = int(t.shape[0]), int(t.n_elements)
        fits = [k for k in (*CANDIDATES, "Q4_0") if row % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[k]][0] == 0]
        total_bytes += min(tensor_bytes(k, n) for k in fits)
        total_weights += n
    return total_bytes * 8 / total_weights


def _check_bpw(base: Path, bpws: list[float]) -> None:
    """Refuse, before any probing, bits-per-weight targets no mix of this model can meet."""
    from edgekit.errors import ConfigError, Problem

    if not bpws:
        return
    floor = smallest_bpw(base)
    low = [b for b in bpws if b < floor]
    if low:
        why = f"below the {floor:.2f} bits per weight of this model's smallest types"
        raise ConfigError([Problem("export", f"bpw {b:g}", why) for b in low])


def _lookup(options, chosen: dict[str, tuple[str, bool]]):
    return {name: next(o for o in options[name] if o.key == key) for name, key in chosen.items()}


def _constrained(name: str, opts, fixed: dict[str, str]):
    """The options a user's override leaves a tensor (all of them when none matches)."""
    for pattern, ggml_type in fixed.items():
        if re.search(pattern, name):
            kept = [o for o in opts if o.ggml_type == ggml_type.upper()]
            return kept or opts
    return opts


def summary(mix: Mix) -> dict[str, Any]:
    """What a sidecar records about a file's mix: types per tensor and the numbers behind them."""
    return {
        **mix.info,
        "budget": mix.label,
        "kept_llama_cpp_mix": mix.kept_preset,
        "types": mix.allocation.types(),
        "imatrix_tensors": mix.allocation.imatrix_tensors(),
    }
