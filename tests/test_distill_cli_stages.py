"""``edgekit distill --via`` (progressive) and ``--add-teacher`` (multi-teacher) from the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgekit.cli import _register_all, app

runner = CliRunner()
TINY = ["--steps", "2", "--batch-size", "2", "--seq-len", "32", "--max-rows", "8", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def _commands():
    if not any(c.name == "distill" for c in app.registered_commands):
        _register_all()


def test_via_runs_every_stage_and_reports_kl_to_the_original_teacher(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama", num_layers=4)
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["distill", str(teacher), "--via", "0.5", "--student-layers", "1", "--out", str(out), *TINY]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "distill.json").read_text())
    assert [s["shape"]["layers"] for s in summary["stages"]] == [2, 1]
    assert "kl_to_original" in summary["heldout"]
    assert (out / "run" / "stage-1" / "model").is_dir() and (out / "model" / "config.json").is_file()
    assert json.loads((out / "model" / "config.json").read_text())["num_hidden_layers"] == 1


def test_add_teacher_trains_on_the_mixture_live_and_from_caches(make_tiny_hf, tmp_path):
    a, b = make_tiny_hf("llama"), make_tiny_hf("llama", num_layers=3)
    base = ["distill", str(a), "--add-teacher", str(b), "--teacher-weights", "3,1", "--student-layers", "1"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "live"), *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "live" / "distill.json").read_text())
    assert summary["teacher_weights"] == [0.75, 0.25] and "kl" in summary["heldout"]
    cached = [*base, "--teacher-weighting", "confidence", "--topk-cache", str(tmp_path / "c"), "--topk", "8"]
    result = runner.invoke(app, [*cached, "--out", str(tmp_path / "cached"), *TINY])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "teacher-1" / "index.json").is_file()
    summary = json.loads((tmp_path / "cached" / "distill.json").read_text())
    assert summary["cache_bytes_per_token"] >= 2 * (8 * 4 + 8)


def test_teachers_with_other_tokenizers_are_refused_with_a_pointer_to_seq_kd(make_tiny_hf, tmp_path):
    a, other = make_tiny_hf("llama"), make_tiny_hf("llama", tokenizer="sp")
    result = runner.invoke(app, ["distill", str(a), "--add-teacher", str(other), "--out", str(tmp_path), *TINY])
    assert result.exit_code != 0
    assert "--seq-kd" in str(result.exception) and str(other) in str(result.exception)
    assert not (tmp_path / "model").exists()


def test_bad_stage_and_weight_options_are_reported_together(make_tiny_hf, tmp_path):
    a = make_tiny_hf("llama")
    args = ["distill", str(a), "--via", "0.5,huge", "--teacher-weights", "1,2", "--teacher-weighting", "vote"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code != 0
    sources = {p.source for p in result.exception.problems}
    assert sources == {"--via", "--teacher-weights", "--teacher-weighting"}


def test_build_config_spells_progressive_stages_as_distill_via(make_tiny_hf, tmp_path):
    from pydantic import ValidationError

    from edgekit.pipeline.config import DataSection, DistillSection
    from edgekit.pipeline.stages import run_distill

    with pytest.raises(ValidationError, match="layer fraction"):
        DistillSection(via="0.5,lots")
    with pytest.raises(ValidationError, match="student_hidden"):
        DistillSection(via="0.5", student_hidden=64)
    teacher = make_tiny_hf("llama", num_layers=4)
    data = DataSection(seq_len=32, max_train_sequences=8, heldout_sequences=2)
    section = DistillSection(via="0.5", student_layers=1, steps=2, batch_size=2)
    summary = run_distill(tmp_path / "out", tmp_path / "scratch", str(teacher), data, section, 0, False, False)
    assert [s["shape"]["layers"] for s in summary["stages"]] == [2, 1]
    assert (tmp_path / "scratch" / "stage-1" / "stage.json").is_file()
    assert json.loads((tmp_path / "out" / "model" / "config.json").read_text())["num_hidden_layers"] == 1
