"""bench/gpu_check.py's dry run: every section of the GPU check runs on the CPU with tiny shapes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_runs_every_section_on_the_cpu_and_writes_one_json(gpu_check, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gpu_check.main(["--dry-run", "--out", str(tmp_path / "check.json")])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["dry_run"] is True and report["device"] == "cpu" and report["gpu"] is None  # never a GPU figure
    s = report["sections"]
    assert set(s) == {"pytest_gpu", "distill", "fused_memory", "loss_curve", "importance", "onnx", "harness_memory"}
    errors = {name: v.get("error") for name, v in s.items() if v["status"] == "error"}
    assert not errors
    assert s["pytest_gpu"]["tests"] >= 2 and s["pytest_gpu"]["skipped"] == s["pytest_gpu"]["tests"]  # no CUDA here
    for kind in ("naive", "fused"):
        assert s["distill"][kind]["tokens_per_s"] > 0 and s["distill"][kind]["peak_mib"] is None
    assert s["fused_memory"]["loss_rel_diff"] < 1e-5  # the fused loss is the naive loss
    assert len(s["loss_curve"]["cpu_fp32_curve"]) == report["shapes"]["curve"]["steps"]
    assert s["loss_curve"]["max_rel_diff"] == 0.0  # CPU against CPU, same seed: the same run
    assert s["importance"]["activation_ffn_finite"] and s["importance"]["taylor_ffn_finite"]
    assert s["harness_memory"]["status"] == "skipped"
    if s["onnx"]["status"] == "ok":  # the ONNX route may be unavailable in this tree; then it says why
        assert s["onnx"]["kl_vs_torch"] < 1e-3
    else:
        assert s["onnx"]["reason"]
