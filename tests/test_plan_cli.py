"""``edgekit plan`` and ``edgekit targets`` from the command line: the --json contract, errors, paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from published_configs import LLAMA_31_8B, hf_config
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent

LLAMA_8B = {**LLAMA_31_8B, "max_position_embeddings": 131072}  # Llama-3.1-8B as published

LEVEL_KEYS = {
    "level",
    "format",
    "params",
    "file_bytes",
    "kv_bytes",
    "overhead_bytes",
    "total_bytes",
    "budget_bytes",
    "fits",
    "decode_tokens_per_s",
    "basis",
    "decode_low",
    "decode_high",
    "speed_note",
    "prefill_tokens_per_s",
}
OPTION_KEYS = {"path", "level", "params", "meets_budget", "reason", "quality", "next_step", "student", "cost"}
COST_KEYS = {
    "tokens",
    "tokens_per_param",
    "teacher_flops",
    "generation_flops",
    "student_flops",
    "gpu",
    "mfu",
    "gpu_hours",
    "gpu_hours_by_class",
    "topk",
    "cache_bytes",
    "compute_budget_gpu_hours",
    "within_compute_budget",
    "tokens_within_budget",
}


def _edgekit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


RESOURCE_KEYS = {"stage", "memory_bytes", "disk_bytes", "memory_terms", "disk_terms", "optional"}


def _model_dir(tmp_path: Path, config: dict) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_plan_json_keys_are_the_documented_schema_when_pruning_is_advised(tmp_path):
    model = _model_dir(tmp_path, LLAMA_8B)
    result = _edgekit("plan", "--target", "raspberry-pi-5", "--model", str(model), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {
        "schema_version",
        "target",
        "model",
        "context",
        "quality_budget",
        "compute_budget_gpu_hours",
        "choice",
        "basis",
        "options",
        "levels",
        "resources",
    }
    assert {e["stage"] for e in data["resources"]} >= {"distill step", "prune", "export: write", "verify Q4_K_M"}
    assert all(set(e) == RESOURCE_KEYS for e in data["resources"])
    assert data["schema_version"] == 1 and data["choice"] == "prune" and data["basis"] == "predicted"
    assert [lv["level"] for lv in data["levels"]] == ["Q4_K_M", "Q5_K_M", "Q8_0"]
    assert all(set(lv) == LEVEL_KEYS for lv in data["levels"])
    assert [o["path"] for o in data["options"]] == ["prune", "distill", "quantize"]
    assert all(set(o) == OPTION_KEYS for o in data["options"])
    assert set(data["options"][0]["cost"]) == COST_KEYS
    assert set(data["options"][1]["student"]) == {"layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim"}
    assert data["options"][2]["cost"] is None and data["options"][2]["meets_budget"] is False


def test_plan_table_names_the_strategy_and_the_cost(tmp_path):
    model = _model_dir(tmp_path, LLAMA_8B)
    result = _edgekit("plan", "--target", "raspberry-pi-5", "--model", str(model), "--compute-budget", "100")
    assert result.returncode == 0, result.stderr
    assert "strategy: prune" in result.stdout
    assert "H100 GPU-hours" in result.stdout and "over the 100-hour" in " ".join(result.stdout.split())
    assert "quality (literature)" in result.stdout


def test_plan_accepts_a_profile_path_where_a_name_is_expected(tmp_path):
    profile = tmp_path / "board.toml"
    profile.write_text((ROOT / "targets" / "raspberry-pi-5.toml").read_text().replace("raspberry-pi-5", "my-board"))
    result = _edgekit("plan", "--target", str(profile), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["target"] == "my-board"
    shown = _edgekit("targets", "show", str(profile))
    assert shown.returncode == 0 and "my-board" in shown.stdout


def test_targets_show_prints_the_cited_hardware_of_a_shipped_profile():
    result = _edgekit("targets", "show", "jetson-orin-nano", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["hardware"]["memory_bandwidth_gbs"] == 68


def test_unreachable_hub_id_is_one_line_suggesting_a_local_path():
    result = _edgekit(
        "plan", "--target", "raspberry-pi-5", "--model", "someone/not-cached-model", env={"HF_HUB_OFFLINE": "1"}
    )
    lines = _error_lines(result)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(lines) == 1 and "someone/not-cached-model" in lines[0] and "local folder" in lines[0]


def test_bad_plan_options_are_reported_together_one_line_each():
    result = _edgekit(
        "plan", "--target", "raspberry-pi-5", "--quality-budget", "tiny", "--gpu-class", "abacus", "--topk", "0"
    )
    lines = _error_lines(result)
    assert result.returncode == 2 and len(lines) == 3
    assert any("--quality-budget" in line and "low, moderate, any" in line for line in lines)
    assert any("--gpu-class" in line and "RTX4090" in line for line in lines)
    assert any("--topk" in line for line in lines)


def test_write_student_saves_a_config_that_loads_with_the_advised_size(tmp_path):
    from edgekit.models import load_config
    from edgekit.plan import count_params

    # ~35B parameters, far too big for the Pi; 160 layers keep its 1.3 GB KV cache readable at 5 tokens/s
    model = _model_dir(tmp_path, {**LLAMA_8B, "num_hidden_layers": 160})
    out = tmp_path / "student"
    result = _edgekit("plan", "-t", "raspberry-pi-5", "-m", str(model), "--write-student", str(out), "--json")
    assert result.returncode == 0, result.stderr
    distill = json.loads(result.stdout)["options"][0]
    assert distill["path"] == "distill"
    assert count_params(load_config(out)) == distill["params"]


def test_write_student_is_refused_without_files_when_quantization_is_enough(tmp_path):
    out = tmp_path / "student"
    result = _edgekit("plan", "-t", "raspberry-pi-5", "--write-student", str(out))
    assert result.returncode == 2 and "quantize" in result.stderr and not out.exists()


def test_plan_loads_configs_without_remote_code_unless_asked(tmp_path, monkeypatch):
    import edgekit.models
    from edgekit.cli.plan import register

    seen = []

    def fake_load_config(name, trust_remote_code=False):
        seen.append(trust_remote_code)

        return hf_config(LLAMA_8B)

    monkeypatch.setattr(edgekit.models, "load_config", fake_load_config)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    assert runner.invoke(app, ["-t", "raspberry-pi-5", "-m", "org/model", "--json"]).exit_code == 0
    assert (
        runner.invoke(app, ["-t", "raspberry-pi-5", "-m", "org/model", "--json", "--trust-remote-code"]).exit_code == 0
    )
    assert seen == [False, True]
