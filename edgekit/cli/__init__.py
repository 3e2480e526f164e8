"""The ``edgekit`` command line: thin typed commands, each calling one SDK function.

Each area registers its commands from its own module (``register(app)``), so adding a command
touches one file. Errors from the SDK print one line per problem and exit non-zero; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from typer.exceptions import TyperException

from edgekit.errors import EdgekitError, ResourceError
from edgekit.fileio import is_disk_full

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT

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


def _quiet_library_bars() -> None:
    """transformers 5 draws a "Loading weights" bar for every model it loads; the CLI has its own display."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the commands that need transformers say so themselves
        return
    hf_logging.disable_progress_bar()


def _register_all() -> None:
    from edgekit.cli import bench, build, distill, export, plan, prune, run, targets

    for module in (targets, plan, distill, prune, export, run, bench, build):
        module.register(app)


def _usage_line(exc: TyperException) -> str:
    """One line for a command-line usage problem: the problem, then where to read the usage."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "edgekit"
    return f"{exc.format_message()} (see '{command} --help')"


def _interrupted() -> NoReturn:
    err_console.print("[yellow]interrupted[/]: rerun with --resume to continue where it stopped")
    raise SystemExit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure leaves as one line and a documented exit code.

    Usage errors exit 2, interrupts 130 (typer turns Ctrl-C into that return value when it is not
    standalone, so the value is passed on rather than dropped), SDK errors their own codes.
    Only typer's own exception types are used here: typer no longer depends on click.
    """
    _register_all()
    _quiet_library_bars()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = app(args=argv, standalone_mode=False)
    except EdgekitError as exc:
        if debug:
            raise
        for line in exc.lines():
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        _interrupted()
    except TyperException as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {_usage_line(exc)}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:  # a full disk can surface from any write, not only edgekit's own
        if debug or not is_disk_full(exc, exc.filename):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(
            f"[bold red]error:[/] {where}no space left on the device ({exc.strerror or exc})", highlight=False
        )
        raise SystemExit(ResourceError.exit_code) from None
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        if result == EXIT_INTERRUPTED:
            _interrupted()
        raise SystemExit(result)
