"""Checks that make a doomed build fail in seconds, not after hours of distillation.

Configuration problems (target profile and build config) are collected and raised together; then
the backends the target's formats need, free disk, and whether the final model can fit the target's
memory budget at its smallest level (with the numbers, and what would fit instead).
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailable, ConfigError, DoesNotFit, EdgekitError, InputError, Problem
from edgekit.formats import level
from edgekit.pipeline.config import BuildConfig, load_build_config
from edgekit.targets import TargetProfile, load_target

# Python modules each format needs, and the pip requirement that provides them.
BACKEND_MODULES = {
    "gguf": [("gguf", "gguf"), ("llama_cpp", "llama-cpp-python")],
    "onnx": [("onnxruntime", "onnxruntime"), ("onnxruntime_genai", "onnxruntime-genai"), ("onnx_ir", "onnx-ir")],
}
BYTES_PER_FP32 = 4


def load_inputs(
    target: str, config_path: str | Path | None, overrides: Sequence[str] = ()
) -> tuple[TargetProfile, BuildConfig]:
    """Load the profile and the build config, reporting every problem in both at once."""
    problems: list[Problem] = []
    profile = config = None
    try:
        profile = load_target(target)
    except ConfigError as exc:
        problems += exc.problems
    try:
        config = load_build_config(config_path, overrides)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return profile, config


def check_backends(formats: list[str]) -> None:
    """Raise BackendUnavailable naming every missing package for the formats to export."""
    missing = [pip for fmt in formats for module, pip in BACKEND_MODULES[fmt] if not _importable(module)]
    if missing:
        raise BackendUnavailable(f"missing packages for {', '.join(formats)} export: pip install {' '.join(missing)}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_disk(folder: Path, teacher_params: int, n_levels: int) -> None:
    """Need roughly: teacher + 3 student checkpoints in fp32, plus one file per level, with 20% slack.

    ``folder`` need not exist yet (nothing is created here); the nearest existing parent is measured.
    """
    need = int(teacher_params * BYTES_PER_FP32 * (4 + n_levels) * 1.2)
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise EdgekitError(f"{folder}: {free / 2**30:.1f} GiB free, the build needs about {need / 2**30:.1f} GiB")


def parameter_estimate(config: Any) -> int:
    """Parameters of a Llama-shaped config (attention counted as 4 square matrices), for the disk check."""
    layer = 4 * config.hidden_size**2 + 3 * config.hidden_size * config.intermediate_size
    return config.num_hidden_layers * layer + 2 * config.vocab_size * config.hidden_size


def predicted_student_config(teacher_config: Any, config: BuildConfig, round_to: int) -> Any:
    """The shape the final model will have after distillation and pruning (for the fit check)."""
    c = copy.deepcopy(teacher_config)
    if config.distill.enabled:
        c.num_hidden_layers = config.distill.student_layers or c.num_hidden_layers
        c.hidden_size = config.distill.student_hidden or c.hidden_size
    if config.prune.enabled:  # the same size arithmetic the prune stage uses
        from edgekit.prune.plan import PrunePlan, planned_config

        p = config.prune
        layers = min(p.layers, c.num_hidden_layers - 1)
        c = planned_config(c, PrunePlan(ffn=p.ffn, heads=p.heads, layers=layers, hidden=p.hidden, round_to=round_to))
    return c


def check_fits(student_config: Any, profile: TargetProfile, model: str) -> list[Any]:
    """Raise DoesNotFit (with numbers and what would fit) if no level of the target's ladder fits."""
    from edgekit.plan import plan_levels

    plans = plan_levels(student_config, profile)
    if not plans or any(p.fits for p in plans):
        return plans
    smallest = min(plans, key=lambda p: p.total_bytes)
    budget = profile.budget.memory_mb * 2**20
    bits = level(smallest.level).bits_per_weight
    max_params = max(0.0, budget - smallest.kv_bytes - (smallest.total_bytes - smallest.file_bytes - smallest.kv_bytes))
    raise DoesNotFit(
        f"{model}: does not fit {profile.name}: the smallest level {smallest.level} needs "
        f"{smallest.total_bytes / 2**20:,.0f} MiB ({smallest.file_bytes / 2**20:,.0f} MiB weights + "
        f"{smallest.kv_bytes / 2**20:,.0f} MiB KV cache at {profile.budget.context_length} tokens) but the budget "
        f"is {profile.budget.memory_mb:,.0f} MiB; at {smallest.level} at most "
        f"{max_params * 8 / bits / 1e6:,.0f}M parameters would fit (distill into a smaller student or prune harder)"
    )


def check_exportable(student_config: Any, plan: dict[str, list[str]], model: str) -> None:
    """Refuse, before any training, a model whose family the ONNX builder cannot export (with the reason)."""
    if not plan.get("onnx"):
        return
    from edgekit.errors import UnsupportedModelError
    from edgekit.export.onnx_genai import unsupported_reason

    reason = unsupported_reason(student_config)
    if reason:
        raise UnsupportedModelError(f"{model}: the target exports ONNX, but {reason}")


def check_teacher_source(source: str) -> None:
    """A local path that does not exist is an input error before anything else runs."""
    if source != "demo" and (source.startswith((".", "/", "~")) and not Path(source).expanduser().exists()):
        raise InputError(source, "teacher folder not found")
