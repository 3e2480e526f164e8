"""``edgekit build``: distill → prune → recover → export → verify → bench → bundle, resumable.

Stages are content-addressed (see ``runner``), so a second run with nothing changed skips all of
them, and a build for another target reuses the target-independent stages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgekit.errors import VerificationError
from edgekit.fileio import read_json
from edgekit.loading import LoadOptions, using
from edgekit.models import count_parameters
from edgekit.pipeline import preflight, stages
from edgekit.pipeline.bundle import bench_summary, write_bundle
from edgekit.pipeline.runner import StageResult, StageRunner
from edgekit.pipeline.teacher import resolve_teacher

STAGES = ("distill", "prune", "recover", "export", "verify", "bench", "bundle")


@dataclass
class BuildResult:
    bundle: Path
    manifest: dict[str, Any]
    stages: list[StageResult]


def build(
    target: str,
    *,
    teacher: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    out: str | Path = "export",
    workdir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
    load: LoadOptions | None = None,
) -> BuildResult:
    """Run the whole pipeline for ``target`` and return the bundle it wrote.

    Settings come from the build config's defaults, then ``config_path`` (TOML), then ``overrides``
    (``section.key=value``); ``teacher`` overrides ``[teacher] model``. ``load`` (revision, cache
    folder, remote code, dtype) applies to the teacher only.
    """
    console = console or get_console()  # the stages' own bars nest in this display only if they share it
    checked = preflight.run(
        target, teacher=teacher, config_path=config_path, overrides=overrides, out=out, workdir=workdir, load=load
    )
    profile, config, source, plan, round_to = (
        checked.profile, checked.config, checked.source, checked.plan, checked.round_to
    )  # fmt: skip
    out = Path(out)
    with using([source], checked.load):
        ref = resolve_teacher(source, checked.load.trust_remote_code, progress=progress)
    work = Path(workdir) if workdir else out / ".work" / ref.name

    with Progress(
        TextColumn("[bold]build[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} stages"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    ) as bar:
        task = bar.add_task("", total=len(STAGES))

        def on_stage(name: str, what: str) -> None:
            bar.update(
                task, description=f"{name} ({'cached' if what == 'skip' else 'running'})", completed=STAGES.index(name)
            )

        runner = StageRunner(work, resume=resume, on_stage=on_stage)
        with using([source, ref.path], checked.load):
            bundle = _run_stages(runner, ref, profile, config, plan, round_to, out, progress, checked.load)
        bar.update(task, completed=len(STAGES), description="done")
    return bundle


def _run_stages(
    runner: StageRunner, ref, profile, config, plan, round_to: int, out: Path, progress: bool, load: LoadOptions
) -> BuildResult:
    data, seed, resume = config.data, config.seed, runner.resume
    teacher = {"fingerprint": ref.fingerprint, **_loading(load)}  # a revision or dtype is another teacher
    base = {"teacher": teacher, "data": data.model_dump(), "seed": seed}
    model_path = Path(ref.path)
    key = ref.fingerprint
    stage_models = [("teacher", model_path)]  # each stage's model, for the report's lineage rows
    if config.distill.enabled:
        d = runner.run(
            "distill",
            {**base, "distill": config.distill.model_dump()},
            lambda o, s: stages.run_distill(o, s, ref.path, data, config.distill, seed, resume, progress),
        )
        model_path, key = d.path / stages.MODEL_DIR, d.key
        stage_models.append(("distill", model_path))
    if config.prune.enabled:
        p = runner.run(
            "prune",
            {"input": key, "data": data.model_dump(), "prune": config.prune.model_dump(), "round_to": round_to},
            lambda o, s, m=model_path: stages.run_prune(o, m, data, config.prune, round_to),
        )
        model_path, key = p.path / stages.MODEL_DIR, p.key
        stage_models.append(("prune", model_path))
        if config.recover.enabled:
            r = runner.run(
                "recover",
                {**base, "input": key, "recover": config.recover.model_dump(), "distill": config.distill.model_dump()},
                lambda o, s, m=model_path: stages.run_recover(
                    o, s, ref.path, m, data, config.distill, config.recover, seed, resume, progress
                ),
            )
            model_path, key = r.path / stages.MODEL_DIR, r.key
            stage_models.append(("recover", model_path))
    imatrix = profile.export.imatrix if config.export.imatrix is None else config.export.imatrix
    e = runner.run(
        "export",
        {
            "input": key,
            "plan": plan,
            "imatrix": imatrix,
            "data": data.model_dump(),
            "calibration": config.export.calibration_sequences,
            "keep_output_tensor": profile.export.keep_output_tensor,
            "onnx": profile.export.onnx.model_dump(),
            "allocate": config.export.allocate,
        },
        lambda o, s: stages.run_export(
            o,
            model_path,
            data,
            plan,
            imatrix,
            config.export.calibration_sequences,
            progress,
            name=_file_stem(ref.name),
            provenance={"teacher": ref.source},
            keep_output_tensor=profile.export.keep_output_tensor,
            onnx_options=profile.export.onnx.builder_options(),
            allocate=config.export.allocate,
        ),
    )
    artifacts = e.summary["artifacts"]
    thresholds = {q["quant"]: profile.verify.threshold(q["quant"]).model_dump() for q in artifacts}
    v = runner.run(
        "verify",
        {"input": e.key, "thresholds": thresholds, "verify": config.verify.model_dump()},
        lambda o, s: stages.run_verify(o, e.path, artifacts, model_path, profile, config.verify),
    )
    passed = [a for a in artifacts if a["path"] in v.summary["passed"]]
    failed = [r for r in v.summary["reports"] if not r["passed"]]
    if not passed or (failed and config.verify.fail_on_error):
        raise VerificationError(
            f"{len(failed)} of {len(artifacts)} artifacts failed verification", _failure_table(failed)
        )
    bench_dir, bench, recommendation = None, None, _fallback_recommendation(passed)
    if config.bench.enabled:
        b = runner.run(
            "bench",
            {
                "input": v.key,
                "artifacts": [a["path"] for a in passed],
                "target": profile.model_dump(mode="json"),
                "suite": config.bench.suite,
            },
            lambda o, s: stages.run_bench(
                o,
                e.path,
                [a["path"] for a in passed],
                model_path,
                ref.path,
                profile,
                config.bench,
                names=(ref.name, ref.source),
            ),
        )
        bench_dir, recommendation = b.path, b.summary["recommendation"]
        bench = read_json(b.path / "results.json")
        if recommendation.get("artifact") is None:  # nothing meets the target: still name a default
            recommendation = _unmet_recommendation(passed, recommendation)
    if runner.on_stage is not None:
        runner.on_stage("bundle", "run")
    manifest = _manifest(runner, ref, profile, model_path, passed, v.summary["reports"], bench, recommendation)
    from edgekit.pipeline.summary import add_report_fields

    seconds = {s.name: s.seconds for s in runner.results}
    add_report_fields(
        manifest,
        profile=profile,
        export_dir=e.path,
        model_path=model_path,
        stage_models=stage_models,
        stage_seconds=seconds,
        heldout_tokens=_bench_quality_tokens(config, profile),
    )
    bundle = write_bundle(
        out / profile.name / ref.name,
        export_dir=e.path,
        artifacts=passed,
        model_dir=model_path,
        target_file=Path(profile.source),
        report_dir=bench_dir,
        manifest=manifest,
    )
    return BuildResult(bundle, manifest, runner.results)


def _loading(load: LoadOptions) -> dict[str, Any]:
    """The loading options that change the teacher's weights (not where the download cache is)."""
    return {"revision": load.revision, "dtype": load.dtype, "trust_remote_code": load.trust_remote_code}


def _file_stem(name: str) -> str:
    """A model name made safe for a file name: ``org/Model 7B`` -> ``Model-7B``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name.rsplit("/", 1)[-1]).strip("-.")
    return stem or "model"


def _failure_table(failed: list[dict[str, Any]]) -> str:
    rows = [f"{'artifact':40} {'mean KL':>10} {'max':>10} {'top-1':>7} {'min':>6}"]
    for r in failed:
        rows.append(
            f"{r['path']:40} {r.get('mean_kl', float('nan')):10.4g} {r.get('max_mean_kl', float('nan')):10.4g} "
            f"{r.get('top1', float('nan')):7.3f} {r.get('min_top1', float('nan')):6.2f}"
        )
    return "\n".join(rows)


def _fallback_recommendation(passed: list[dict[str, Any]]) -> dict[str, Any]:
    """Without measurements: the smallest verified artifact, labelled as such."""
    best = min(passed, key=lambda a: a["file_size_bytes"])
    return {
        "artifact": best["path"],
        "quant": best["quant"],
        "basis": "size",
        "reason": f"{best['quant']} is the smallest artifact that passed verification (no benchmark was run)",
    }


def _unmet_recommendation(passed: list[dict[str, Any]], measured: dict[str, Any]) -> dict[str, Any]:
    """No level met the target's budget and speed floor: default to the smallest, and say so."""
    smallest = _fallback_recommendation(passed)
    return {
        **measured,
        "artifact": smallest["artifact"],
        "quant": smallest["quant"],
        "meets_target": False,
        "reason": f"{measured['reason']}; {smallest['quant']}, the smallest verified level, is the default",
    }


def _manifest(
    runner: StageRunner, ref, profile, model_path: Path, passed, reports, bench, recommendation
) -> dict[str, Any]:
    from edgekit.models import load_model

    by_path = {r["path"]: r for r in reports}
    measured = bench_summary(bench) if bench else {}
    artifacts = [{**a, "verification": by_path[a["path"]], "bench": measured.get(a["path"])} for a in passed]
    return {
        "target": profile.name,
        "teacher": {"source": ref.source, "name": ref.name, "fingerprint": ref.fingerprint},
        "student": {"parameters": count_parameters(load_model(model_path))},
        "stages": [{"name": s.name, "key": s.key, "seconds": s.seconds, "skipped": s.skipped} for s in runner.results],
        "artifacts": artifacts,
        "verification": {"passed": True, "artifacts": len(passed)},
        "bench": None if not bench else {"suite": bench["suite"], "host": bench["host"], "results": "results.json"},
        "recommended": recommendation,
    }


def _bench_quality_tokens(config, profile) -> int | None:
    """The held-out tokens the bench scored the shipped files on (None when it scored none)."""
    if not config.bench.enabled:
        return None
    from edgekit.bench.suites import load_suite

    return load_suite(config.bench.suite, profile).quality_tokens or None
