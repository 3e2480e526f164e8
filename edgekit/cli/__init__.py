"""The ``edgekit`` command line: thin typed commands, each calling one SDK function.

Each area registers its commands from its own module (``register(app)``), so adding a command
touches one file. Errors from the SDK print one line per problem and exit non-zero; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from edgekit.errors import EdgekitError

app = typer.Typer(
    name="edgekit",
    help="Distill, prune, quantize, verify and benchmark language models for edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """edgekit: teacher in, verified and benchmarked edge artifact out."""
    _state["debug"] = debug


def _register_all() -> None:
    from edgekit.cli import bench, build, distill, export, plan, prune, run, targets

    for module in (targets, plan, distill, prune, export, run, bench, build):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register_all()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except EdgekitError as exc:
        if debug:
            raise
        for line in exc.lines():
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: rerun with --resume to continue where it stopped")
        raise SystemExit(130) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # click usage errors carry their own exit codes
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.exceptions.Abort):
            raise SystemExit(1) from None
        raise
