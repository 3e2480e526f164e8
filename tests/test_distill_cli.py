"""``edgekit distill`` on a tiny model: it trains, writes its outputs, resumes and refuses bad options."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgekit.cli import _register_all, app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def _commands():
    if not any(c.name == "distill" for c in app.registered_commands):
        _register_all()


TINY = ["--steps", "3", "--batch-size", "2", "--seq-len", "32", "--max-rows", "8", "--quiet"]


def test_distill_command_writes_student_and_summary(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    out = tmp_path / "out"
    result = runner.invoke(app, ["distill", str(teacher), "--student-layers", "1", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file() and (out / "run" / "monitor.jsonl").is_file()
    summary = json.loads((out / "distill.json").read_text())
    assert summary["steps"] == 3 and summary["heldout"]["kl"] > 0
    assert json.loads((out / "model" / "config.json").read_text())["num_hidden_layers"] == 1
    assert "KL(teacher" in result.output
    assert (out / "run" / "monitor.png").read_bytes()[:4] == b"\x89PNG"


def test_monitor_logs_heldout_kl_every_n_steps_even_when_training_from_a_cache(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    args = ["distill", str(teacher), "--student-layers", "1", "--out", str(tmp_path / "o"), "--eval-every", "1"]
    result = runner.invoke(app, [*args, "--topk-cache", str(tmp_path / "c"), "--topk", "8", "--alpha", "0", *TINY])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in (tmp_path / "o" / "run" / "monitor.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2, 3] and all(e["kl"] > 0 and "top1" in e for e in entries)


def test_distill_command_trains_from_a_topk_cache(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    args = ["distill", str(teacher), "--student-layers", "1", "--out", str(tmp_path / "o"), "--topk-cache"]
    result = runner.invoke(app, [*args, str(tmp_path / "cache"), "--topk", "16", "--alpha", "0", "-T", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cache" / "index.json").read_text())["k"] == 16
    assert json.loads((tmp_path / "o" / "distill.json").read_text())["cache_bytes_per_token"] >= 16 * 4 + 8


def test_distill_command_reports_every_bad_option_at_once(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    result = runner.invoke(app, ["distill", str(teacher), "--loss", "tv", "--alpha", "2", "--align", "l1"])
    assert result.exit_code != 0
    problems = result.exception.problems
    assert {p.source for p in problems} == {"--loss", "--alpha", "--align"}


def test_existing_small_student_with_the_teachers_tokenizer_is_trained_in_its_own_shape(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    small = make_tiny_hf("llama", num_layers=1, hidden_size=128, intermediate_size=256, num_heads=2, num_kv_heads=1)
    out = tmp_path / "o"
    result = runner.invoke(app, ["distill", str(teacher), "--student", str(small), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "model" / "config.json").read_text())
    assert (saved["num_hidden_layers"], saved["hidden_size"], saved["num_attention_heads"]) == (1, 128, 2)
    summary = json.loads((out / "distill.json").read_text())
    assert summary["heldout"]["kl"] > 0 and summary["steps"] == 3  # logit-level KD: same vocabulary


def test_distill_command_refuses_non_positive_steps_and_batch(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    result = runner.invoke(app, ["distill", str(teacher), "--steps", "0", "--batch-size", "0", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert {p.source for p in result.exception.problems} == {"--steps", "--batch-size"}
    assert not (tmp_path / "model").exists()


def test_student_with_another_tokenizer_is_refused_with_a_pointer_to_seq_kd(make_tiny_hf, tmp_path):
    teacher, other = make_tiny_hf("llama"), make_tiny_hf("llama", tokenizer="sp")
    result = runner.invoke(app, ["distill", str(teacher), "--student", str(other), "--out", str(tmp_path), *TINY])
    assert result.exit_code != 0
    assert "--seq-kd" in str(result.exception)


def test_seq_kd_trains_a_student_with_another_tokenizer_on_teacher_text(make_tiny_hf, tmp_path):
    teacher, other = make_tiny_hf("llama"), make_tiny_hf("llama", tokenizer="sp")
    out = tmp_path / "o"
    args = ["distill", str(teacher), "--student", str(other), "--out", str(out), "--seq-kd"]
    result = runner.invoke(app, [*args, "--seq-kd-prompts", "4", "--seq-kd-tokens", "6", *TINY])
    assert result.exit_code == 0, result.output
    lines = (out / "seqkd.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["response"] for line in lines)
    summary = json.loads((out / "distill.json").read_text())
    assert summary["config"]["alpha"] == 1.0 and "heldout" not in summary  # no logit comparison across vocabularies


def test_resume_continues_a_finished_run_without_training_again(make_tiny_hf, tmp_path, monkeypatch):
    import edgekit.distill.trainer as trainer

    teacher = make_tiny_hf("llama")
    args = ["distill", str(teacher), "--student-layers", "1", "--out", str(tmp_path), *TINY]
    assert runner.invoke(app, args).exit_code == 0
    first = (tmp_path / "model" / "model.safetensors").read_bytes()
    steps = []
    real = trainer._step
    monkeypatch.setattr(trainer, "_step", lambda step, run: steps.append(step) or real(step, run))
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert steps == []  # all 3 steps were restored from OUT/run/latest
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == first


def test_student_from_a_config_only_folder_is_randomly_initialised(make_tiny_hf, tmp_path):
    teacher = make_tiny_hf("llama")
    config = json.loads((teacher / "config.json").read_text())
    config.update(num_hidden_layers=1, hidden_size=128, intermediate_size=256, num_attention_heads=2)
    config.update(num_key_value_heads=1, head_dim=64)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(config))
    out = tmp_path / "o"
    result = runner.invoke(app, ["distill", str(teacher), "--student", str(tmp_path / "cfg"), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["hidden_size"] == 128 and (out / "model" / "tokenizer.json").is_file()


def test_help_explains_temperature_and_alpha():
    result = runner.invoke(app, ["distill", "--help"])
    assert result.exit_code == 0
    assert "dark knowledge" in result.output and "--topk-cache" in result.output
