"""``edgekit bench``: measure artifacts (or a target's whole quantization ladder) and recommend a level."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def bench(
    artifacts: list[Path] = typer.Argument(None, help="GGUF files or ONNX folders to measure."),
    suite: str = typer.Option("quick", "--suite", "-s", help="quick | full | quant-sweep, or a suite .toml."),
    target: str = typer.Option(None, "--target", "-t", help="Target profile: threads, memory budget, speed floor."),
    model: Path = typer.Option(
        None,
        "--model",
        "-m",
        help="The fp HF model the artifacts came from (quality reference; with quant-sweep: the model to export).",
    ),
    teacher: Path = typer.Option(None, "--teacher", help="The teacher, for KL/top-1 against it."),
    out: Path = typer.Option(Path("export/bench"), "--out", "-o", help="Where results.json and the report go."),
    limit: bool = typer.Option(
        False,
        "--limit/--no-limit",
        help="Hold each run to the target's threads and memory budget (mobile-class setting); a model that does not fit is reported, not fatal.",
    ),
    on_device: bool = typer.Option(
        False,
        "--on-device",
        help="This host is the target device: recommend from measured speed instead of the roofline prediction.",
    ),
) -> None:
    """Measure load time, peak memory, time to first token, prefill and decode tokens/s and quality; write results.json and an HTML/Markdown report; recommend a level for the target.

    With --suite quant-sweep --target NAME --model DIR, the target's ladder is exported first (with an importance matrix) and every level is measured.
    """
    from edgekit.bench import recommend, run_suite, write_report
    from edgekit.bench.suites import load_suite
    from edgekit.targets import load_target

    profile = load_target(target) if target else None
    spec = load_suite(suite)
    paths = list(artifacts or [])
    if spec.export_ladder:
        if profile is None or model is None:
            raise typer.BadParameter("quant-sweep needs --target and --model", param_hint="--suite")
        from edgekit.export.gguf import export_gguf

        paths += export_gguf(model, out / "artifacts", profile.ladder("gguf") or ["Q4_K_M", "Q8_0"], imatrix="auto")
    if not paths:
        raise typer.BadParameter(
            "give artifacts to measure, or --suite quant-sweep with --model", param_hint="ARTIFACTS"
        )
    results = run_suite(
        paths, suite, target=profile, reference_model=model, teacher_model=teacher, out_dir=out, limit_to_target=limit
    )
    if profile is not None:
        results["recommendation"] = recommend(results, profile, on_device=on_device)
    from edgekit.fileio import write_json_atomic

    write_json_atomic(out / "results.json", results)
    md, page = write_report(results, out)
    console.print(md.read_text())
    console.print(f"[green]report[/] {page}")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the CLI."""
    app.command("bench")(bench)
