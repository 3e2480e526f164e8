"""``edgekit plan``: what fits a device, how fast it should run, and which lever to pull."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
JSON_SCHEMA_VERSION = 1


def _config(model: str, trust_remote_code: bool):
    if model == "demo":
        from edgekit.demo import demo_config

        return demo_config()
    from edgekit.models import check_architecture, load_config

    config = load_config(model, trust_remote_code=trust_remote_code)
    check_architecture(config, model)
    return config


def plan(
    target: str = typer.Option(..., "--target", "-t", help="Target profile name or .toml path."),
    model: str = typer.Option("demo", "--model", "-m", help="HF folder, Hub id (config only, no weights), or 'demo'."),
    context: int = typer.Option(None, "--context", help="Context length for the KV cache (default: the target's)."),
    quality_budget: str = typer.Option(
        "moderate", "--quality-budget", help="low | moderate | any: how much quality loss quantization may cost."
    ),
    gpu: str = typer.Option("H100", "--gpu", help="GPU class for cost estimates: H100, A100, L4, RTX4090."),
    tokens: float = typer.Option(
        None, "--tokens", help="Training tokens for distillation/recovery (default: 20 per student parameter)."
    ),
    topk: int = typer.Option(64, "--topk", help="K of the top-K teacher logit cache, for its disk estimate."),
    measurements: Path = typer.Option(
        None, "--measurements", help="A bench results.json: use measured size/speed instead of predictions."
    ),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the model's own config code."),
    as_json: bool = typer.Option(
        False, "--json", help="Machine-readable output (schema_version 1, see docs/decision-guide.md)."
    ),
) -> None:
    """Per quantization level: file size, KV cache, fit in the memory budget, and predicted decode speed; then the cheapest path (quantize, prune + recover, or distill) that meets the budget, with a cost estimate.

    Speeds are roofline predictions (memory bandwidth ÷ bytes read per token) unless --measurements is given. No weights are loaded.
    """
    from edgekit.advisor import advise
    from edgekit.fileio import read_json
    from edgekit.targets import load_target

    profile = load_target(target)
    config = _config(model, trust_remote_code)
    results = read_json(measurements) if measurements else None
    advice = advise(
        config, profile, quality_budget=quality_budget, gpu=gpu, tokens=tokens, topk=topk, measurements=results
    )
    if context:
        from edgekit.plan import plan_levels

        advice.levels = plan_levels(config, profile, context)
    if as_json:
        typer.echo(
            json.dumps(
                {"schema_version": JSON_SCHEMA_VERSION, "target": profile.name, "model": model, **advice.to_dict()},
                indent=2,
            )
        )
        return
    _print(profile, model, advice)


def _print(profile, model: str, advice) -> None:
    speed = "decode tok/s (" + ("measured" if advice.basis == "measured" else "roofline prediction") + ")"
    table = Table(
        title=f"{model} on {profile.name} (budget {profile.budget.memory_mb:,.0f} MiB, "
        f"{profile.hardware.memory_bandwidth_gbs:g} GB/s, context {profile.budget.context_length})"
    )
    for col in ("level", "params", "file MiB", "KV MiB", "total MiB", "fits", speed):
        table.add_column(col, justify="right")
    for lv in advice.levels:
        table.add_row(
            lv.level,
            f"{lv.params / 1e6:,.1f}M",
            f"{lv.file_bytes / 2**20:,.1f}",
            f"{lv.kv_bytes / 2**20:,.1f}",
            f"{lv.total_bytes / 2**20:,.1f}",
            "[green]yes[/]" if lv.fits else "[red]no[/]",
            f"{lv.predicted_decode_tokens_per_s:,.1f}",
        )
    console.print(table)
    console.print(f"[bold]strategy: {advice.choice}[/]")
    for i, option in enumerate(advice.options):
        mark = "→" if i == 0 else " "
        console.print(f" {mark} [bold]{option.path}[/] ({option.level}): {option.reason}")
        console.print(f"     expected quality cost (literature): {option.quality}")
        if option.cost:
            c = option.cost
            console.print(
                f"     cost: {c['tokens'] / 1e9:,.2f}B tokens, {(c['teacher_flops'] + c['student_flops']):.2e} "
                f"FLOPs ≈ {c['gpu_hours']:,.1f} {c['gpu']} GPU-hours; top-{c['topk']} cache "
                f"{c['cache_bytes'] / 2**30:,.1f} GiB"
            )


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the CLI."""
    app.command("plan")(plan)
