"""docs/decision-guide.md shows what ``edgekit plan`` prints today: every pasted run is re-run and compared."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import published_configs as published
import pytest
import typer
from typer.testing import CliRunner

from edgekit.advisor import QUALITY_BANDS, QUANT_PPL_DELTA

DOC = Path(__file__).resolve().parents[1] / "docs" / "decision-guide.md"
CUT = "[... "  # the guide shortens one output with a line starting like this

CONFIGS = {  # the published hyper-parameters the guide says it used
    "llama32-1b": published.LLAMA_32_1B,
    "llama31-8b": published.LLAMA_31_8B,
    "llama31-70b": published.LLAMA_31_70B,
}


def _pasted_runs() -> list[tuple[str, str]]:
    """(command arguments, printed output) for every ``$ edgekit plan`` block in the guide."""
    blocks = re.findall(r"```\n\$ edgekit (plan [^\n]*)\n(.*?)\n```", DOC.read_text(), re.S)
    runnable = [b for b in blocks if "--measurements" not in b[0]]  # those need a bench results file
    assert len(runnable) >= 5, "the guide's worked example is missing"
    return runnable


@pytest.mark.parametrize(("command", "printed"), _pasted_runs(), ids=lambda v: v[:60] if v.startswith("plan") else "")
def test_guide_output_is_what_plan_prints_now(command, printed, tmp_path, monkeypatch):
    from edgekit.cli.plan import register

    for name, config in CONFIGS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    now = [line.rstrip() for line in result.output.splitlines()]
    pasted = printed.splitlines()
    if pasted[-1].startswith(CUT):
        pasted = pasted[:-1]
        now = now[: len(pasted)]
    assert now == pasted


def test_guide_quotes_the_advisor_quality_figures():
    text = " ".join(DOC.read_text().split())
    for level, delta in QUANT_PPL_DELTA.items():
        assert f"{level} +{delta:.4f}" in text, level
    assert "MMLU 64.5" in text and "58.6" in text and "97% of BERT's GLUE score" in text
    assert "94B tokens" in QUALITY_BANDS["prune"] and "97%" in QUALITY_BANDS["distill"]
