"""edgekit run / edgekit chat on a tiny model, without a terminal."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import edgekit
from edgekit.cli import run as run_cli


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    run_cli.register(app)
    return app


def test_cli_run_prints_same_text_as_generate_when_greedy(app, tiny_llama_dir):
    result = CliRunner().invoke(
        app, ["run", str(tiny_llama_dir), "--prompt", "import os", "--max-tokens", "12", "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    with edgekit.load(tiny_llama_dir) as model:
        assert printed["text"] == model.generate("import os", max_tokens=12)
        assert printed["prompt_tokens"] == len(model.tokenize("import os"))
    assert 0 < printed["generated_tokens"] <= 12


def test_cli_run_streams_text_and_reports_speed_when_not_json(app, tiny_llama_dir):
    args = ["run", str(tiny_llama_dir), "-p", "def f():", "--max-tokens", "8", "--temperature", "0.7", "--seed", "3"]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout and first.stdout.strip()
    assert "tokens/s decode" in first.stderr


def test_cli_chat_answers_each_line_until_exit_when_stdin_is_piped(app, tiny_llama_dir):
    args = ["chat", str(tiny_llama_dir), "--max-tokens", "6", "--system", "Be brief."]
    result = CliRunner().invoke(app, args, input="hello\n\nhow are you?\n/exit\nnever read\n")
    assert result.exit_code == 0, result.output
    with edgekit.load(tiny_llama_dir) as model:
        history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
        first = model.generate(history, max_tokens=6)
        history += [{"role": "assistant", "content": first}, {"role": "user", "content": "how are you?"}]
        second = model.generate(history, max_tokens=6)
    assert result.stdout == f"{first}\n{second}\n"


def test_cli_stop_option_reads_backslash_n_as_newline_when_typed_in_a_shell():
    assert run_cli._unescape("a\\n\\tb") == "a\n\tb"
