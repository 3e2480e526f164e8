"""`edgekit build` end to end on a tiny teacher: skip, resume after SIGKILL, fail fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.errors import DoesNotFit
from edgekit.pipeline import build
from edgekit.pipeline.bundle import read_manifest

TARGET = """
name = "tiny-board"
[hardware]
device = "test board"
memory_gb = 1
memory_bandwidth_gbs = 10
cpu = "2 cores"
cpu_cores = 2
[budget]
memory_mb = {memory_mb}
context_length = 256
[export]
formats = ["gguf"]
gguf_ladder = ["Q4_K_M", "Q8_0"]
[runtime]
threads = 2
[verify]
heldout_tokens = 128
thresholds.Q4_K_M = {{ max_mean_kl = 1.0, min_top1 = 0.0 }}
thresholds.Q8_0 = {{ max_mean_kl = 0.1, min_top1 = 0.5 }}
[bench]
prompt_lengths = [16]
new_tokens = 8
repeats = 1
warmup = 0
"""

CONFIG = """
[teacher]
model = "{teacher}"
[data]
seq_len = 64
max_train_sequences = 48
heldout_sequences = 2
[distill]
student_layers = 1
steps = {steps}
batch_size = 2
[prune]
ffn = 0.5
round_to = 256
calibration_sequences = 2
[recover]
steps = 3
[export]
calibration_sequences = 2
[verify]
max_tokens = 96
[bench]
suite = "quick"
"""


@pytest.fixture
def tiny_build(tmp_path, tiny_llama_dir):
    """(target path, config path) for a build that takes seconds."""

    def make(memory_mb: int = 200, steps: int = 4) -> tuple[Path, Path]:
        target = tmp_path / f"tiny-board-{memory_mb}.toml"
        target.write_text(TARGET.format(memory_mb=memory_mb))
        config = tmp_path / f"build-{steps}.toml"
        config.write_text(CONFIG.format(teacher=tiny_llama_dir, steps=steps))
        return target, config

    return make


def _artifact_hashes(bundle: Path) -> dict[str, str]:
    files = read_manifest(bundle)["files"]
    return {f["path"]: f["sha256"] for f in files if f["path"].endswith(".gguf")}


def test_impossible_target_fails_in_preflight_with_the_numbers(tiny_build, tmp_path):
    target, config = tiny_build(memory_mb=1)
    started = time.perf_counter()
    with pytest.raises(DoesNotFit) as info:
        build(str(target), config_path=config, out=tmp_path / "out", progress=False)
    assert time.perf_counter() - started < 30
    message = str(info.value)
    assert "MiB" in message and "budget" in message and "parameters would fit" in message
    assert not (tmp_path / "out" / ".work").exists()


@pytest.mark.integration
def test_second_build_skips_every_stage_and_bundle_lists_every_file(tiny_build, tmp_path):
    target, config = tiny_build()
    first = build(str(target), config_path=config, out=tmp_path / "out", progress=False)
    second = build(str(target), config_path=config, out=tmp_path / "out", progress=False)
    assert [s.skipped for s in first.stages] == [False] * len(first.stages)
    assert [s.skipped for s in second.stages] == [True] * len(second.stages)
    manifest = read_manifest(second.bundle)
    on_disk = {p.relative_to(second.bundle).as_posix() for p in second.bundle.rglob("*") if p.is_file()}
    assert {f["path"] for f in manifest["files"]} == on_disk - {"manifest.json"}
    assert manifest["verification"]["passed"] and manifest["recommended"]["artifact"]
    assert {"torch", "transformers", "llama-cpp-python", "onnxruntime"} <= set(manifest["versions"])
    assert _artifact_hashes(first.bundle) == _artifact_hashes(second.bundle)


@pytest.mark.integration
def test_killed_build_resumed_equals_an_uninterrupted_one(tiny_build, tmp_path):
    target, config = tiny_build(steps=40)
    reference = build(str(target), config_path=config, out=tmp_path / "ref", progress=False)

    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "edgekit",
        "build",
        "--target",
        str(target),
        "--config",
        str(config),
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob(".work/*/scratch/distill-*/*")):
        time.sleep(0.05)  # a checkpoint exists: distillation is under way
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "tiny-board").exists(), "a killed build must not leave a bundle"

    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _artifact_hashes(out / "tiny-board" / reference.bundle.name) == _artifact_hashes(reference.bundle)
    manifest = json.loads((out / "tiny-board" / reference.bundle.name / "manifest.json").read_text())
    assert manifest["recommended"]["artifact"] in {a["path"] for a in manifest["artifacts"]}
