"""``edgekit targets``: list, show and validate device profiles."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from edgekit.cli import options as opt
from edgekit.targets import list_targets, load_target, targets_dir

targets_app = typer.Typer(
    help="Device profiles: what each target holds, how fast its memory is, which formats it gets.",
    invoke_without_command=True,
    no_args_is_help=False,
)
console = Console()


@targets_app.callback()
def _list(ctx: typer.Context) -> None:
    """List the shipped target profiles (``edgekit targets show NAME`` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title=f"target profiles in {targets_dir()}")
    table.add_column("name", no_wrap=True, style="bold")
    for col in ("device", "budget (MiB)", "GB/s", "threads", "formats", "GGUF ladder"):
        table.add_column(col)
    for name in list_targets():
        t = load_target(name)
        table.add_row(
            name,
            t.hardware.device,
            f"{t.budget.memory_mb:,.0f}",
            f"{t.hardware.memory_bandwidth_gbs:g}",
            str(t.runtime.threads),
            ", ".join(t.export.formats),
            " → ".join(t.ladder("gguf")) or "-",
        )
    console.print(table)
    console.print("A path to your own profile works wherever a name does; see docs/targets.md.")


@targets_app.command("show")
def show(
    target: str = typer.Argument(..., help="Profile name (e.g. raspberry-pi-5) or path to a .toml file."),
    as_json: bool = opt.json_option("The validated profile."),
) -> None:
    """Print one validated target profile."""
    profile = load_target(target)
    data = profile.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console.print(f"[bold]{profile.name}[/]  {profile.description}  [dim]({profile.source})[/]")
    for section, values in data.items():
        if isinstance(values, dict):
            console.print(f"[bold cyan]{section}[/]")
            for key, value in values.items():
                console.print(f"  {key} = {value}")


@targets_app.command("validate")
def validate(files: list[str] = typer.Argument(..., help="Profile names or .toml paths to check.")) -> None:
    """Check profiles; every problem is reported at once with file and key."""
    for f in files:
        profile = load_target(f)
        console.print(f"[green]ok[/] {profile.source}")


def register(app: typer.Typer) -> None:
    """Add ``edgekit targets`` to the CLI."""
    app.add_typer(targets_app, name="targets")
