"""``edgekit build`` and ``edgekit inspect``: the whole pipeline, and what it delivered."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgekit.cli import options as opt

console = Console()


def build(
    target: str = opt.target_option(required=True),
    model: str = opt.model_option(None, "Default: the build config's teacher.model, else the built-in demo."),
    config: Path = typer.Option(None, "--config", "-c", help="Build config TOML overriding the defaults."),
    settings: list[str] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Override one build-config key, e.g. --set distill.steps=80 (repeatable).",
    ),
    out: Path = opt.out_option(Path("export"), "Bundles go to OUT/<target>/<model>/."),
    workdir: Path = typer.Option(None, "--workdir", help="Stage outputs and checkpoints (default OUT/.work/<model>)."),
    resume: bool = opt.resume_option("Distillation continues from its last checkpoint."),
    explain: bool = typer.Option(
        False, "--explain", help="Say for each stage whether it would run or be reused, and why; run nothing."
    ),
    quiet: bool = opt.quiet_option(),
    ignore_resources: bool = opt.ignore_resources_option(),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    dtype: str = opt.dtype_option(),
) -> None:
    """Distill, prune, recover, export, quantize, verify, benchmark and bundle for one target.

    Preflight checks (profile and config, backends, disk, whether the model can fit the target) fail in seconds, before any training. Settings come from the target profile and the build-config defaults (docs/pipeline.md), then --config, then --set. Finished stages are skipped on the next run (their settings, inputs, code and tool versions are hashed; --explain says what would run and why), so re-running after a change redoes only what it affects; after an interruption, --resume also continues distillation from its last checkpoint. With no --model the built-in demo teacher is trained once (a few minutes) and used.

    [bold]Examples[/]

      edgekit build --target raspberry-pi-5

      edgekit build --target jetson-orin-nano --model ./my-llama --config build.toml

      edgekit build --target raspberry-pi-5 --set distill.steps=40 --set export.gguf_levels='["Q8_0"]'

      edgekit build --target raspberry-pi-5 --resume
    """
    from edgekit.pipeline import build as run_build

    load = opt.load_options(revision, cache_dir, trust_remote_code, dtype)
    if explain:
        from edgekit.pipeline.explain import explain_build

        for line in explain_build(target, teacher=model, config_path=config, overrides=settings or (), out=out,
                                  workdir=workdir, load=load):  # fmt: skip
            console.print(line, highlight=False)
        return
    result = run_build(
        target,
        teacher=model,
        config_path=config,
        overrides=settings or (),
        out=out,
        workdir=workdir,
        resume=resume,
        progress=not quiet,
        load=load,
        ignore_resources=ignore_resources,
    )
    for stage in result.stages:
        state = "cached" if stage.skipped else f"{stage.seconds:.1f} s"
        console.print(f"  {stage.name:8} {state}")
    rec = result.manifest["recommended"]
    console.print(f"[bold green]bundle[/] {result.bundle}")
    colour = "yellow" if rec.get("meets_target") is False else "bold"
    console.print(f"[{colour}]recommended[/] {rec['artifact']} ({rec['quant']}): {rec['reason']}")


def inspect(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgekit build`."),
    as_json: bool = opt.json_option("The manifest as it is."),
    no_verify_hash: bool = typer.Option(False, "--no-verify-hash", help=opt.VOCABULARY["--no-verify-hash"]),
) -> None:
    """Summarise a bundle: artifacts, verification, speed and the recommended level.

    Every file is checked against the manifest's sha256 first (cached per file), so a tampered or
    truncated bundle is reported instead of summarised.
    """
    from edgekit.pipeline.bundle_check import load_manifest, verify_files

    manifest = load_manifest(bundle)
    if not no_verify_hash:
        verify_files(bundle, manifest)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    from rich.markup import escape

    teacher, student = manifest.get("teacher", {}), manifest.get("student", {})
    console.print(
        f"[bold]{escape(str(bundle))}[/]  target {escape(str(manifest.get('target', '?')))}  "
        f"teacher {escape(str(teacher.get('source', '?')))}  student {student.get('parameters', 0):,} parameters"
    )
    from edgekit.errors import InputError
    from edgekit.pipeline.summary import STAGE_HEADERS, artifact_rows, ship, stage_rows

    try:  # the schema checks what every reader needs; the report's tables read more (lineage, predictions)
        headers, rows = artifact_rows(manifest)  # the report's own table and formatting: the same numbers
        rec, shipped = manifest["recommended"], ship(manifest, str(bundle))
        lineage = stage_rows(manifest)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(
            Path(bundle) / "manifest.json", f"bundle manifest lacks what inspect shows ({exc!r})"
        ) from None
    target = escape(str(manifest.get("target", "?")))
    _print_fitting(f"artifacts (★ recommended; target = {target}, predicted unless measured there)", headers, rows)
    console.print(
        "[bold]recommended[/] "
        + escape(f"{rec['artifact']} ({rec.get('quant', '?')}, {rec.get('basis', '')}): {rec.get('reason', '')}")
    )
    if shipped["sha256"]:
        console.print(f"sha256 {shipped['sha256']}", highlight=False, soft_wrap=True, markup=False)
    _print_fitting("pipeline (held-out perplexity; KL and top-1 against the teacher)", STAGE_HEADERS, lineage)
    console.print(
        f"[dim]{len(manifest['files'])} files with sha256 in manifest.json; report.html tells the whole story[/]"
    )


def _print_fitting(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """Print a table whose columns are never cut: when it is wider than the terminal, the columns after
    the first (the row names) are split over as many tables as needed, each repeating the names."""
    from rich.markup import escape
    from rich.measure import Measurement

    def build(columns: list[int], name: str, names: list[str] = headers) -> Table:
        table = Table(title=name)
        for i in [0, *columns]:
            table.add_column(names[i], justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*(escape(str(row[i])) for i in [0, *columns]))
        return table

    longest_words = [max(h.split() or [""], key=len) for h in headers]  # headers may wrap between words

    def fits(columns: list[int]) -> bool:  # natural width with every cell on one line
        natural = console.options.update_width(1 << 16)
        return Measurement.get(console, natural, build(columns, "", longest_words)).maximum <= console.width

    groups: list[list[int]] = [[]]
    for i in range(1, len(headers)):
        if groups[-1] and not fits([*groups[-1], i]):
            groups.append([])
        groups[-1].append(i)
    for part, group in enumerate(groups):
        console.print(build(group, title + (f" ({part + 1}/{len(groups)})" if len(groups) > 1 else "")))


def register(app: typer.Typer) -> None:
    """Add ``build`` and ``inspect`` to the CLI."""
    app.command("build", cls=opt.Command)(build)
    app.command("inspect", cls=opt.Command)(inspect)
