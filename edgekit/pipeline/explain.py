"""``edgekit build --explain``: for each stage, would it run or be reused, and why; runs nothing.

The build's own preflight and stage chain are replayed with a dry-run runner: a stage whose key has
a finished output is reused; the first one without stops the replay, and what differs from that
stage's most recent earlier output (its spec, a file of its code, a tool version, the teacher) is
named. Every stage after it consumes its output, so it runs too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekit.fileio import read_json
from edgekit.loading import LoadOptions, using
from edgekit.pipeline import preflight
from edgekit.pipeline.runner import STAGE_FILE, StageRunner, WouldRun

MAX_DIFFERENCES = 6  # per stage, so a new tool version does not print every file


class _Bundle(Exception):
    pass


def explain_build(
    target: str,
    *,
    teacher: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    out: str | Path = "export",
    workdir: str | Path | None = None,
    load: LoadOptions | None = None,
) -> list[str]:
    """One line per stage: ``reuse``/``run`` and the reason. Raises what preflight raises."""
    from edgekit.pipeline.build import STAGES, _run_stages
    from edgekit.pipeline.teacher import resolve_teacher

    checked = preflight.run(
        target, teacher=teacher, config_path=config_path, overrides=overrides, out=out, workdir=workdir, load=load
    )
    lines = ["preflight: passed (profile, config, stage values, backends, fit, disk, memory)"]
    if checked.source == "demo" and not _demo_trained():
        return [*lines, "teacher: the demo teacher is not trained yet: it is trained first (minutes)"] + [
            f"{name:8} run: nothing is cached before the teacher exists" for name in STAGES
        ]
    with using([checked.source], checked.load):
        ref = resolve_teacher(checked.source, checked.load.trust_remote_code, progress=False)
    work = Path(workdir) if workdir else Path(out) / ".work" / ref.name
    reused: list[str] = []

    def on_stage(name: str, what: str) -> None:
        if name == "bundle":
            raise _Bundle
        reused.append(name)

    runner = StageRunner(work, dry_run=True, on_stage=on_stage)
    first = None
    try:
        with using([checked.source, ref.path], checked.load):
            c = checked
            _run_stages(runner, ref, c.profile, c.config, c.plan, c.round_to, Path(out), False, c.load)
    except WouldRun as stop:
        first = stop
    except _Bundle:
        pass
    for name in reused:
        lines.append(f"{name:8} reuse: output {runner.output(name, _key_of(runner, name)).name} is finished")
    if first is not None:
        lines.append(f"{first.name:8} run: {_why(work, first)}")
        after = STAGES[STAGES.index(first.name) + 1 :]
        lines += [f"{name:8} run: its input ({first.name}) is rebuilt" for name in after if name != "bundle"]
    lines.append("bundle   written from the stages' outputs")
    return lines


def _demo_trained() -> bool:
    from edgekit.demo import DEMO_INFO_FILE, DEMO_NAME, DemoRecipe, cache_root, demo_key

    return (cache_root() / f"{DEMO_NAME}-{demo_key(DemoRecipe())}" / DEMO_INFO_FILE).is_file()


def _key_of(runner: StageRunner, name: str) -> str:
    return next(r.key for r in runner.results if r.name == name)


def _why(work: Path, stop: WouldRun) -> str:
    """What differs from the newest earlier output of the same stage (or that there is none)."""
    earlier = sorted(
        (work / "stages").glob(f"{stop.name}-*/{STAGE_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if not earlier:
        return "no earlier output of this stage"
    before = read_json(earlier[0])
    changes = differences(before, stop.identity)
    if not changes:
        return f"no output for key {stop.key}"
    shown = "; ".join(changes[:MAX_DIFFERENCES]) + (
        f"; and {len(changes) - MAX_DIFFERENCES} more" if len(changes) > MAX_DIFFERENCES else ""
    )
    return f"changed since {earlier[0].parent.name}: {shown}"


def differences(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, worded for people: code files, tool versions, settings."""
    found = []
    for key in sorted(set(before) | set(now)):
        if key in ("key", "summary", "seconds"):
            continue
        a, b = before.get(key), now.get(key)
        path = f"{prefix}{key}"
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{path}.")
        elif prefix == "code.":
            found.append(f"code {key} {'changed' if a and b else 'added' if b else 'removed'}")
        elif prefix == "tools.":
            found.append(f"{key} {a or 'absent'} -> {b or 'absent'}")
        else:
            found.append(f"{path}: {_short(a)} -> {_short(b)}")
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
