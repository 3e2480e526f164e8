"""Checks that make a doomed build fail in seconds, not after hours of distillation.

Configuration problems (target profile and build config) are collected and raised together,
including every value a later stage would reject, checked with the validator that stage calls
(``stage_value_problems``: exportable levels from the one table in ``edgekit.formats``, the bench
suite, the training text, the layers pruning removes, the student's shape, GGML type overrides);
then the backends the target's formats need, free disk, and whether the final model can fit the
target's memory budget at its smallest level (with the numbers, and what would fit instead).
``run`` does all of it in order and returns what the build needs.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailable, ConfigError, DoesNotFit, EdgekitError, InputError, Problem
from edgekit.formats import LEVELS, level, level_problems
from edgekit.loading import LoadOptions, using
from edgekit.pipeline.config import OVERRIDE_SOURCE, BuildConfig, load_build_config
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
    """Parameters of the config (the family spec's exact count), for the disk check."""
    from edgekit.plan import count_params

    return count_params(config)


def check_runtime_rules(student_config: Any, profile: TargetProfile, formats: list[str]) -> list[str]:
    """Refuse now (UnsupportedModelError with the reason) what llama.cpp could not run; return warnings
    for what it runs differently at the target's context (e.g. a sliding window it ignores)."""
    if "gguf" not in formats:
        return []
    from edgekit.errors import UnsupportedModelError
    from edgekit.export.gguf import gguf_refusals, gguf_warnings

    if problems := gguf_refusals(student_config):
        raise UnsupportedModelError("GGUF export would fail: " + "; ".join(problems))
    return gguf_warnings(student_config, profile.budget.context_length)


def predicted_student_config(teacher_config: Any, config: BuildConfig, round_to: int) -> Any:
    """The shape the final model will have after distillation and pruning (for the fit check)."""
    c = copy.deepcopy(teacher_config)
    if config.distill.enabled:
        c.num_hidden_layers = config.distill.student_layers or c.num_hidden_layers
        c.hidden_size = config.distill.student_hidden or c.hidden_size
    if config.prune.enabled:  # the same size arithmetic the prune stage uses
        from edgekit.prune.plan import PrunePlan, planned_config

        p = config.prune
        layers = min(p.layers, c.num_hidden_layers - 1)  # too many is reported by stage_value_problems
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


@dataclass(frozen=True)
class Checked:
    """What preflight established, for the build to use."""

    profile: TargetProfile
    config: BuildConfig
    source: str  # the teacher as the user named it
    plan: dict[str, list[str]]  # format -> levels to export
    round_to: int
    teacher_config: Any
    student_config: Any
    load: LoadOptions
    resource_notes: tuple[str, ...] = ()  # what the resource check decided (a stage left out, a warning)


def _origin(key: str, config_path: str | Path | None, overrides: Sequence[str]) -> str:
    """Where a build-config key's value came from: ``--set``, the config file, or the defaults."""
    if any(o.partition("=")[0].strip() == key for o in overrides):
        return OVERRIDE_SOURCE
    return str(config_path) if config_path else "build config"


def teacher_config(source: str, trust_remote_code: bool) -> Any:
    """The teacher's config without loading weights (or training the demo teacher)."""
    if source == "demo":
        from edgekit.demo import demo_config

        return demo_config()
    from edgekit.models import load_config

    return load_config(source, trust_remote_code=trust_remote_code)


def stage_value_problems(
    profile: TargetProfile,
    config: BuildConfig,
    plan: dict[str, list[str]],
    teacher: Any,
    round_to: int,
    origin=lambda key: "build config",
) -> list[Problem]:
    """Every value a later stage would reject, found with the validator that stage calls."""
    problems: list[Problem] = []
    for fmt, levels in plan.items():  # export: the exporters' own table of levels
        explicit = getattr(config.export, f"{fmt}_levels")
        where = (
            (origin(f"export.{fmt}_levels"), f"export.{fmt}_levels")
            if explicit
            else (profile.source, f"export.{fmt}_ladder")
        )
        problems += level_problems(fmt, levels, *where)
    if plan.get("gguf") and profile.export.keep_output_tensor:  # export: the quantizer's type check
        problems += _guard(
            _check_type_overrides, profile.export.keep_output_tensor, profile.source, "export.keep_output_tensor"
        )
    if config.bench.enabled:  # bench: the suite loader
        from edgekit.bench.suites import load_suite

        problems += _guard(lambda v: load_suite(v, profile), config.bench.suite, origin("bench.suite"), "bench.suite")
    if config.data.train != "builtin":  # distill, prune, export: the text loader
        from edgekit.data import load_texts

        problems += _guard(load_texts, config.data.train, origin("data.train"), "data.train")
    student = copy.deepcopy(teacher)
    if config.distill.enabled:
        student.num_hidden_layers = config.distill.student_layers or student.num_hidden_layers
        student.hidden_size = config.distill.student_hidden or student.hidden_size
        from edgekit.distill.student import check_student_shape  # distill: the student it can derive

        d = config.distill
        key = "distill.student_hidden" if d.student_hidden else "distill.student_layers"
        problems += _guard(
            lambda t: check_student_shape(t, d.student_layers, d.student_hidden), teacher, origin(key), key
        )
    if config.prune.enabled:  # prune: the check its layer selection makes
        from edgekit.prune.plan import check_layers

        n = student.num_hidden_layers
        layer_problems = _guard(
            lambda r: check_layers(r, n), config.prune.layers, origin("prune.layers"), "prune.layers"
        )
        problems += layer_problems
        if not layer_problems:  # prune: the shape checks prune_model makes before cutting
            problems += _pruned_shape_problems(teacher, config, round_to, origin)
    return problems


def _pruned_shape_problems(teacher: Any, config: BuildConfig, round_to: int, origin) -> list[Problem]:
    from edgekit.prune.compat import gguf_problems

    shape = predicted_student_config(teacher, config, round_to)
    problems = [Problem(origin("prune"), "prune", message) for message in gguf_problems(shape)]
    return problems + _guard(_check_config, shape, origin("prune"), "prune")


def _guard(check, value, source: str, key: str) -> list[Problem]:
    """Run a stage's validator on a value; its complaint becomes one Problem naming source and key."""
    try:
        check(value)
    except ConfigError as exc:
        return [Problem(source, key, p.message) for p in exc.problems]
    except (EdgekitError, ValueError) as exc:
        return [Problem(source, key, str(exc).splitlines()[-1].strip() if str(exc) else type(exc).__name__)]
    return []


def _check_type_overrides(keep: str) -> None:
    if not _importable("gguf"):
        return  # check_backends names the missing package
    from edgekit.export.quantize import check_overrides, keep_output_overrides

    check_overrides(keep_output_overrides(keep))


def _check_config(config: Any) -> None:
    """transformers' own validation of a config (head counts dividing widths, ...), as model creation runs it."""
    validate = getattr(config, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except Exception as exc:  # huggingface_hub's StrictDataclass errors are not ValueErrors
        raise ValueError(str(exc).strip().splitlines()[-1].strip()) from None


def run(
    target: str,
    *,
    teacher: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    out: str | Path = "export",
    workdir: str | Path | None = None,
    load: LoadOptions | None = None,
    ignore_resources: bool = False,
    machine: Any = None,
) -> Checked:
    """Every check, cheapest first; raises (ConfigError with every problem at once) or returns ``Checked``."""
    from edgekit.pipeline.stages import export_plan

    profile, config = load_inputs(target, config_path, overrides)
    source = teacher or config.teacher.model
    check_teacher_source(source)
    load = load or LoadOptions(trust_remote_code=config.teacher.trust_remote_code)
    trust = config.teacher.trust_remote_code or load.trust_remote_code
    plan = export_plan(profile, config.export)
    known_gguf = [q for q in plan.get("gguf", []) if q in LEVELS]
    round_to = config.prune.round_to or (256 if any(LEVELS[q].k_quant for q in known_gguf) else 1)
    with using([source], load):
        t_config = teacher_config(source, trust)
    origin = lambda key: _origin(key, config_path, overrides)  # noqa: E731
    problems = stage_value_problems(profile, config, plan, t_config, round_to, origin)
    if problems:
        raise ConfigError(problems)
    check_backends([fmt for fmt, levels in plan.items() if levels])
    student = predicted_student_config(t_config, config, round_to)
    check_fits(student, profile, source)
    check_exportable(student, plan, source)  # a family the ONNX builder cannot export: refused before training
    for warning in check_runtime_rules(student, profile, [fmt for fmt, levels in plan.items() if levels]):
        from rich import get_console

        get_console().print(f"[yellow]warning:[/] {warning}", highlight=False)
    n_levels = sum(len(v) for v in plan.values())
    folder = Path(workdir) if workdir else Path(out)
    check_disk(folder, parameter_estimate(t_config), n_levels)
    config, notes = check_resources(t_config, student, config, plan, profile, folder, machine, ignore_resources)
    return Checked(profile, config, source, plan, round_to, t_config, student, load, notes)


def check_resources(teacher, student, config: BuildConfig, plan, profile, folder: Path, machine, ignore: bool):
    """Each stage's estimated memory and disk against ``machine`` (default: this one, measured now):
    raises ResourceError with the numbers, or returns the config with the allocation left out."""
    from edgekit.pipeline.preflight_resources import build_estimates, check, this_machine

    estimates = build_estimates(teacher, student, config, plan, profile)
    decision = check("build", estimates, machine or this_machine(folder), out=folder, ignore=ignore)
    if any(stage.endswith("allocation") for stage in decision.left_out):
        config = config.model_copy(update={"export": config.export.model_copy(update={"allocate": "none"})})
    return config, decision.notes
