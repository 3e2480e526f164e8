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
    table = Table(title="artifacts (★ recommended; paths in manifest.json)")
    table.add_column("level", no_wrap=True)
    for col in ("size (MiB)", "mean KL", "top-1", "verified", "decode tok/s", "peak RSS (MiB)"):
        table.add_column(col, justify="right")
    rec = manifest["recommended"]
    for a in manifest.get("artifacts", []):
        v, b = a.get("verification") or {}, a.get("bench") or {}
        star = " ★" if a["path"] == rec["artifact"] else ""
        table.add_row(
            escape(f"{a.get('format', '?')} {a.get('quant', '?')}{star}"),
            f"{a.get('file_size_bytes', 0) / 2**20:.2f}",
            _number(v.get("mean_kl"), "{:.2e}"),
            _number(v.get("top1"), "{:.3f}"),
            "[green]yes[/]" if v.get("passed") else "[red]no[/]",
            _number(b.get("decode_tokens_per_s"), "{:,.0f}"),
            _number(b.get("peak_rss_bytes"), "{:,.0f}", scale=2**-20),
        )
    console.print(table)
    console.print(
        "[bold]recommended[/] "
        + escape(f"{rec['artifact']} ({rec.get('quant', '?')}, {rec.get('basis', '')}): {rec.get('reason', '')}"),
        markup=True,
    )
    stages = escape(", ".join(f"{s['name']} {s.get('seconds', 0):.0f} s" for s in manifest.get("stages", [])))
    console.print(f"[dim]stages: {stages}; {len(manifest['files'])} files with sha256 in manifest.json[/]")


def _number(value: float | None, fmt: str, scale: float = 1.0) -> str:
    """A measurement for the table, or a dash where the bundle has none (no bench was run)."""
    return "-" if value is None else fmt.format(value * scale)


def register(app: typer.Typer) -> None:
    """Add ``build`` and ``inspect`` to the CLI."""
    app.command("build", cls=opt.Command)(build)
    app.command("inspect", cls=opt.Command)(inspect)
