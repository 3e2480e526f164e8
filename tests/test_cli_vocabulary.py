"""One vocabulary across commands: walks every registered command's parameters.

Fails when a flag name is used with two meanings (a flag shared by commands must come from
``edgekit.cli.options.VOCABULARY``), when a short flag stands for two long ones, when a command
that loads a model lacks the Hugging Face loading options, or when an old spelling is still live.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import typer.main

from edgekit.cli import _register_all, app
from edgekit.cli.options import DEPRECATED, VOCABULARY, rewrite_deprecated

HF_LOADING = {"--revision", "--cache-dir", "--trust-remote-code", "--dtype"}
# Commands that load a model the user names, and which of the loading options apply (plan reads a config only).
LOADS_A_MODEL = {
    "build": HF_LOADING,
    "distill": HF_LOADING,
    "prune": HF_LOADING,
    "export": HF_LOADING,
    "verify": HF_LOADING,
    "bench": HF_LOADING,
    "plan": HF_LOADING - {"--dtype"},
}


def _commands() -> dict[str, object]:
    """Command path ('targets show') -> the command object typer built."""
    _register_all()
    root = typer.main.get_command(app)
    found = {}

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix} {name}".strip()
            if getattr(command, "commands", None):
                walk(command, path)
            found[path] = command

    walk(root, "")
    return found


def _options(command) -> list[tuple[list[str], list[str], str, str]]:
    """(long flags, short flags, help, python name) of each visible option."""
    rows = []
    for param in command.params:
        flags = [*param.opts, *getattr(param, "secondary_opts", [])]
        if not any(f.startswith("-") for f in flags) or getattr(param, "hidden", False):
            continue
        long = [f for f in flags if f.startswith("--")]
        short = [f for f in flags if not f.startswith("--")]
        rows.append((long, short, getattr(param, "help", None) or "", param.name))
    return rows


def test_the_walk_sees_every_command() -> None:
    commands = _commands()
    for name in ("build", "inspect", "plan", "distill", "prune", "export", "verify", "run", "chat", "bench"):
        assert name in commands
    assert "targets show" in commands


def test_a_flag_shared_by_commands_has_one_meaning() -> None:
    uses = defaultdict(list)
    for path, command in _commands().items():
        for long, _, help_text, _ in _options(command):
            for flag in long:
                uses[flag].append((path, help_text))
    problems = []
    for flag, where in uses.items():
        commands = {path for path, _ in where}
        if len(commands) < 2:
            continue
        if flag not in VOCABULARY:
            problems.append(f"{flag} is used by {sorted(commands)} but has no entry in options.VOCABULARY")
            continue
        problems += [
            f"{path}: {flag} help does not start with its meaning {VOCABULARY[flag]!r}"
            for path, help_text in where
            if not help_text.startswith(VOCABULARY[flag])
        ]
    assert not problems, "\n".join(problems)


def test_a_short_flag_stands_for_one_long_flag_everywhere() -> None:
    meanings = defaultdict(set)
    for command in _commands().values():
        for long, short, _, _ in _options(command):
            for s in short:
                meanings[s].add(long[0] if long else "?")
    clashes = {s: sorted(m) for s, m in meanings.items() if len(m) > 1}
    assert not clashes, clashes


@pytest.mark.parametrize("command", sorted(LOADS_A_MODEL))
def test_commands_that_load_a_model_take_the_hf_loading_options(command) -> None:
    flags = {f for long, _, _, _ in _options(_commands()[command]) for f in long}
    assert LOADS_A_MODEL[command] <= flags, LOADS_A_MODEL[command] - flags


def test_deprecated_spellings_are_gone_and_point_at_live_flags() -> None:
    commands = _commands()
    for name, table in DEPRECATED.items():
        flags = {f for long, short, _, _ in _options(commands[name]) for f in (*long, *short)}
        for old, new in table.items():
            assert old not in flags, f"{name} {old} is deprecated but still a live flag"
            assert not new or new[0] in flags, f"{name} {old} points at {new[0]}, which {name} lacks"


def test_old_spellings_still_work_with_a_one_line_note() -> None:
    notes = []
    args = ["demo", "--layers", "1", "-s", "x", "--temperature=3", "--", "--layers"]
    assert rewrite_deprecated("distill", args, notes.append) == [
        "demo",
        "--student-layers",
        "1",
        "--student",
        "x",
        "--kd-temperature=3",
        "--",
        "--layers",
    ]
    assert len(notes) == 3 and all(n.count("\n") == 0 and "deprecated" in n for n in notes)
    assert rewrite_deprecated("bench", ["a.gguf", "--gpu"], notes.append) == ["a.gguf", "--device", "cuda"]
    assert rewrite_deprecated("build", ["--progress"], notes.append) == []


def test_an_old_spelling_runs_through_the_cli(capsys) -> None:
    """plan --gpu (now --gpu-class) is parsed, noted on stderr, and means what it meant."""
    from edgekit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["plan", "--target", "raspberry-pi-5", "--gpu", "abacus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'edgekit plan --gpu' is deprecated, use --gpu-class" in err
    assert "--gpu-class" in err and "abacus" in err
