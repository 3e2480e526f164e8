"""Preflight: does this machine hold what each stage will need (``edgekit.resources``)?

Compares every stage's estimated peak memory with the memory available now (``MemAvailable`` from
/proc/meminfo, or the cgroup's limit less its usage when that is lower: a container's limit is what
kills the process) and the disk the run writes with the free space of the output folder. Before any
work it either refuses with one line giving the numbers, or leaves out an optional stage (the
sensitivity allocation, whose fallback is llama.cpp's own mix) and says so. ``Machine`` is a plain
value so tests inject a small machine instead of faking /proc.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.errors import ResourceError
from edgekit.resources import Estimate, GiB, disk_total

IGNORE_HINT = "--ignore-resources to try anyway"


@dataclass(frozen=True)
class Machine:
    """What the machine offers now, in bytes (``None``: unknown, not checked)."""

    memory_available: int | None
    disk_free: int | None
    memory_source: str = "MemAvailable"  # where the memory figure came from


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """cgroup v2 ``memory.max - memory.current``; v1 ``limit - usage``; None without a limit."""
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # fmt: skip
        try:
            limit = (root / limit_name).read_text().strip()
            usage = int((root / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # v1 writes a huge number for "no limit"
            return None
        return max(0, int(limit) - usage)
    return None


def free_disk(folder: Path) -> int:
    """Free bytes where ``folder`` is (or would be created: its nearest existing parent)."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def this_machine(out: Path) -> Machine:
    """Memory available now (the lower of MemAvailable and the cgroup's room) and free disk at ``out``."""
    mem, cgroup = _meminfo_available(), _cgroup_available()
    source = "MemAvailable"
    if cgroup is not None and (mem is None or cgroup < mem):
        mem, source = cgroup, "the cgroup's memory limit"
    return Machine(mem, free_disk(out), source)


@dataclass(frozen=True)
class Decision:
    """What preflight decided: the stages left out to fit (with why), and the lines to print."""

    left_out: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB // 10 else f"{n / 2**20:.0f} MiB"  # no "0.0 GiB"


def check(
    command: str,
    estimates: Iterable[Estimate],
    machine: Machine,
    *,
    disk_bytes: int | None = None,
    out: Path | None = None,
    ignore: bool = False,
) -> Decision:
    """Refuse (ResourceError, one line with the numbers) or return what to leave out to fit.

    ``disk_bytes`` defaults to the sum of the estimates' disk terms; ``ignore`` turns a refusal into
    a note (the user said to try anyway).
    """
    estimates = list(estimates)
    notes: list[str] = []
    left_out: list[str] = []
    if machine.memory_available is not None:
        too_big = [e for e in estimates if e.memory_bytes > machine.memory_available]
        for e in [e for e in too_big if e.optional]:
            left_out.append(e.stage)
            notes.append(
                f"{e.stage} needs about {_gib(e.memory_bytes)} of memory, {_gib(machine.memory_available)} "
                f"available: left out ({e.stage.split(': ')[-1]} falls back to llama.cpp's own tensor types)"
            )
        required = [e for e in too_big if not e.optional]
        if required:
            worst = max(required, key=lambda e: e.memory_bytes)
            message = (
                f"{command} needs about {_gib(worst.memory_bytes)} of memory ({worst.stage}: {worst.formula()}), "
                f"this machine has {_gib(machine.memory_available)} available ({machine.memory_source})"
            )
            if not ignore:
                raise ResourceError(f"{message}; {IGNORE_HINT}")
            notes.append(f"{message}; trying anyway (--ignore-resources)")
    need = disk_bytes if disk_bytes is not None else disk_total(estimates)
    if machine.disk_free is not None and need > machine.disk_free:
        message = (
            f"{command} writes about {_gib(need)} under {out or 'the output folder'}, "
            f"which has {_gib(machine.disk_free)} free"
        )
        if not ignore:
            raise ResourceError(f"{message}; {IGNORE_HINT}")
        notes.append(f"{message}; trying anyway (--ignore-resources)")
    return Decision(tuple(left_out), tuple(notes))


def build_estimates(teacher: Any, student: Any, config: Any, plan: dict[str, list[str]], profile: Any) -> list:
    """Every stage ``edgekit build`` will run, as estimates (``edgekit.resources``), in order.

    ``teacher``/``student``: HF configs before distillation and after pruning; ``config``: the
    BuildConfig; ``plan``: format -> levels; ``profile``: the target (its context and imatrix setting).
    """
    import copy

    from edgekit import resources

    distilled = copy.deepcopy(teacher)
    out: list[Estimate] = []
    if config.distill.enabled:
        distilled.num_hidden_layers = config.distill.student_layers or distilled.num_hidden_layers
        distilled.hidden_size = config.distill.student_hidden or distilled.hidden_size
        step = resources.distill_step(teacher, distilled, config.distill.batch_size, config.data.seq_len)
        out.append(replace(step, stage="distill"))
    if config.prune.enabled:
        out.append(resources.prune(distilled, student))
        if config.recover.enabled:
            step = resources.distill_step(distilled, student, config.distill.batch_size, config.data.seq_len)
            out.append(replace(step, stage="recover"))
    context = profile.budget.context_length
    imatrix = profile.export.imatrix if config.export.imatrix is None else config.export.imatrix
    if plan.get("gguf"):
        out += resources.gguf_export(
            student, plan["gguf"], imatrix_used=imatrix, allocate=config.export.allocate,
            verify_tokens=config.verify.max_tokens, context=context,
        ).phases  # fmt: skip
    if plan.get("onnx"):
        out += resources.onnx_export_all(student, plan["onnx"]).phases
    if config.bench.enabled:
        out += [resources.bench(student, q, context) for levels in plan.values() for q in levels]
    return out


def check_command(command: str, estimates: list[Estimate], out: Path | None, ignore: bool) -> Decision:
    """``check`` against this machine for a single command (prune, distill), printing its notes."""
    decision = check(command, estimates, this_machine(Path(out or ".")), out=out, ignore=ignore)
    if decision.notes:
        from rich import get_console

        for note in decision.notes:
            get_console().print(f"[yellow]note:[/] {note}", highlight=False)
    return decision
