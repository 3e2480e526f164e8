"""`edgekit build` end to end on a tiny teacher: skip, resume after SIGKILL, fail fast."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import edgekit
from edgekit.errors import BackendUnavailable, DoesNotFit, EdgekitError
from edgekit.fileio import TEMP_PREFIX
from edgekit.pipeline import build, preflight
from edgekit.pipeline.bundle import read_manifest

ROOT = Path(__file__).resolve().parent.parent
build_module = importlib.import_module("edgekit.pipeline.build")
_CAPTURE = {"capture_output": True, "text": True, "cwd": ROOT, "timeout": 120}

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


# Files whose bytes depend only on the build's inputs (reports and results hold measured timings;
# sidecars hold verification figures).
def _reproducible_hashes(bundle: Path) -> dict[str, str]:
    files = read_manifest(bundle)["files"]
    keep = (".gguf", "target.toml")
    return {f["path"]: f["sha256"] for f in files if f["path"].endswith(keep) or f["path"].startswith("tokenizer/")}


def _no_teacher(*args, **kwargs):
    raise AssertionError("preflight should have failed before the teacher was resolved")


def test_impossible_target_fails_in_preflight_with_the_numbers(tiny_build, tmp_path):
    target, config = tiny_build(memory_mb=1)
    started = time.perf_counter()
    with pytest.raises(DoesNotFit) as info:
        build(str(target), config_path=config, out=tmp_path / "out", progress=False)
    assert time.perf_counter() - started < 30
    message = str(info.value)
    assert "MiB" in message and "budget" in message and "parameters would fit" in message
    assert not (tmp_path / "out" / ".work").exists()


def test_short_disk_fails_in_preflight_before_the_teacher_is_resolved(tiny_build, tmp_path, monkeypatch):
    target, config = tiny_build()
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))
    monkeypatch.setattr(build_module, "resolve_teacher", _no_teacher)
    with pytest.raises(EdgekitError, match=r"0\.0 GiB free, the build needs about"):
        build(str(target), config_path=config, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists(), "preflight creates nothing"


def test_missing_backend_fails_in_preflight_naming_the_package(tiny_build, tmp_path, monkeypatch):
    target, config = tiny_build()
    monkeypatch.setattr(preflight, "_importable", lambda module: module != "llama_cpp")
    monkeypatch.setattr(build_module, "resolve_teacher", _no_teacher)
    with pytest.raises(BackendUnavailable, match="pip install llama-cpp-python"):
        build(str(target), config_path=config, out=tmp_path / "out", progress=False)


def test_cli_build_on_an_impossible_target_is_one_line_error_with_exit_code_5(tiny_build, tmp_path):
    target, config = tiny_build(memory_mb=1)
    cmd = [sys.executable, "-m", "edgekit", "build", "-t", str(target), "-c", str(config), "-o", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 5 and "Traceback" not in result.stderr
    assert len(lines) == 1 and "does not fit tiny-board" in lines[0]


def test_cli_set_flags_reach_the_build_config_and_bad_ones_exit_2_naming_the_flag(tmp_path):
    cmd = ["build", "-t", "raspberry-pi-5", "-o", str(tmp_path / "out"), "--set", "distill.colour=1"]
    result = subprocess.run([sys.executable, "-m", "edgekit", *cmd, "--set", "prune.ffn=2"], **_CAPTURE)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 2
    assert "--set: distill.colour: unknown key" in lines[0] and "--set: prune.ffn" in lines[1]
    assert not (tmp_path / "out").exists()


def test_recommendation_defaults_to_the_smallest_level_when_none_meets_the_target():
    passed = [
        {"path": "gguf/m-Q8_0.gguf", "quant": "Q8_0", "file_size_bytes": 900},
        {"path": "gguf/m-Q4_K_M.gguf", "quant": "Q4_K_M", "file_size_bytes": 500},
    ]
    measured = {"artifact": None, "quant": None, "basis": "predicted", "reason": "no level fits board's 1 MiB"}
    rec = build_module._unmet_recommendation(passed, measured)
    assert rec["artifact"] == "gguf/m-Q4_K_M.gguf" and rec["meets_target"] is False
    assert rec["reason"].startswith("no level fits board's 1 MiB") and rec["basis"] == "predicted"


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
    assert {"report.html", "report.md", "target.toml", "tokenizer/tokenizer.json"} <= on_disk
    assert manifest["verification"]["passed"] and manifest["recommended"]["artifact"]
    assert {"torch", "transformers", "llama-cpp-python", "onnxruntime"} <= set(manifest["versions"])
    assert [s["name"] for s in manifest["stages"]] == ["distill", "prune", "recover", "export", "verify", "bench"]
    assert all(s["seconds"] > 0 for s in manifest["stages"])
    assert all(a["bench"]["decode_tokens_per_s"] > 0 for a in manifest["artifacts"])
    scored = {a["bench"]["heldout_tokens"] for a in manifest["artifacts"]} | {
        r["heldout_tokens"] for r in manifest["lineage"]
    }
    assert len(scored) == 1, "stage models and shipped files are scored on the same held-out rows"
    assert ".work" not in (second.bundle / "report.md").read_text(), "the report names the model, not a work path"
    for sidecar in second.bundle.glob("gguf/*.gguf.json"):
        shipped = json.loads(sidecar.read_text())
        assert shipped["source_model"].startswith("stages/recover-"), "sidecars name no work folder of this machine"
        assert shipped["verification"]["artifact"] == sidecar.name.removesuffix(".json")
    assert _reproducible_hashes(first.bundle) == _reproducible_hashes(second.bundle)


@pytest.mark.integration
def test_bundle_loads_its_recommended_artifact_and_inspect_names_it(tiny_build, tmp_path):
    target, config = tiny_build()
    result = build(str(target), config_path=config, out=tmp_path / "out", progress=False)
    recommended = result.manifest["recommended"]["artifact"]
    with edgekit.load(result.bundle) as model:
        assert Path(model.info.path) == (result.bundle / recommended).resolve()
        assert isinstance(model.generate("def", max_tokens=4), str)
    shown = subprocess.run(
        [sys.executable, "-m", "edgekit", "inspect", str(result.bundle)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert shown.returncode == 0, shown.stderr
    assert f"recommended {recommended}" in shown.stdout and "tiny-board" in shown.stdout
    level = result.manifest["recommended"]["quant"]
    assert f"{level} ★" in shown.stdout  # the table marks the recommended row by its level


def _build_cmd(target: Path, config: Path, out: Path) -> list[str]:
    return ["-m", "edgekit", "build", "-t", str(target), "-c", str(config), "-o", str(out), "--quiet"]


# Runs `edgekit build` with one stage's body wrapped so that the process SIGKILLs itself once the
# stage's output is fully written under its temporary name, before it is renamed into place: the
# worst moment, hit deterministically. argv: STAGE, then the CLI arguments.
_KILL_AFTER_BODY = """
import os, signal, sys
import edgekit.pipeline.bundle as bundle
import edgekit.pipeline.stages as stages
from edgekit.cli import main

module, name = {"bundle": (bundle, "write_json_atomic")}.get(sys.argv[1], (stages, "run_" + sys.argv[1]))
original = getattr(module, name)

def killed(*args, **kwargs):
    original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(module, name, killed)
main(sys.argv[2:])
"""


def _kill_in_distill(cmd: list[str], env: dict, out: Path) -> int:
    """Start the build and SIGKILL it from outside as soon as distillation has saved a checkpoint."""
    proc = subprocess.Popen([sys.executable, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(out.glob(".work/*/scratch/distill-*/latest")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


@pytest.fixture(scope="module")
def reference_build(make_tiny_hf, tmp_path_factory):
    """An uninterrupted build, shared by the kill tests: (target, config, bundle)."""
    folder = tmp_path_factory.mktemp("reference")
    target, config = folder / "tiny-board.toml", folder / "build.toml"
    target.write_text(TARGET.format(memory_mb=200))
    config.write_text(CONFIG.format(teacher=make_tiny_hf("llama"), steps=40))
    return target, config, build(str(target), config_path=config, out=folder / "out", progress=False).bundle


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["distill", "export", "bench", "bundle"])
def test_build_killed_during_a_stage_then_resumed_equals_an_uninterrupted_one(reference_build, tmp_path, stage):
    target, config, reference = reference_build
    out = tmp_path / "killed"
    cmd = _build_cmd(target, config, out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if stage == "distill":
        code = _kill_in_distill(cmd, env, out)
    else:
        killer = [sys.executable, "-c", _KILL_AFTER_BODY, stage, *cmd[2:]]
        code = subprocess.run(killer, env=env, capture_output=True, timeout=600).returncode
    assert code == -signal.SIGKILL, f"the build ended before it was killed in {stage}"
    bundle = out / "tiny-board" / reference.name
    assert not bundle.exists(), "a killed build must not leave a bundle"
    if stage == "bundle":
        assert list(bundle.parent.glob(f"{TEMP_PREFIX}*-{bundle.name}.*/*")), "the kill left a half-written bundle"
    elif stage != "distill":
        assert list(out.glob(f".work/*/stages/{TEMP_PREFIX}*-{stage}-*/*")), "the kill left a half-written output"
        assert not list(out.glob(f".work/*/stages/{stage}-*")), f"{stage} must not look finished"

    done = subprocess.run([sys.executable, *cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _reproducible_hashes(bundle) == _reproducible_hashes(reference)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["recommended"]["artifact"] in {a["path"] for a in manifest["artifacts"]}
    leftovers = [*out.rglob(".*.tmp"), *out.rglob(f"{TEMP_PREFIX}*")]
    assert not leftovers, f"half-written outputs left behind: {leftovers}"


def test_bundle_rewrites_a_folder_artifacts_sidecar_without_work_paths_when_copying(tmp_path):
    from edgekit.pipeline.bundle import _copy_artifact

    work = tmp_path / ".work" / "m"
    src = work / "stages" / "export-abc" / "onnx" / "onnx-int8"
    src.mkdir(parents=True)
    (src / "model.onnx").write_bytes(b"onnx")
    model = work / "stages" / "recover-def" / "model"
    sidecar = {"source_model": str(model), "verification": {"artifact": str(src), "passed": True}}
    (src / "edgekit-artifact.json").write_text(json.dumps(sidecar))
    _copy_artifact(src, tmp_path / "bundle" / "onnx" / "onnx-int8", work=work)
    shipped = json.loads((tmp_path / "bundle" / "onnx" / "onnx-int8" / "edgekit-artifact.json").read_text())
    assert shipped["source_model"] == "stages/recover-def/model"
    assert shipped["verification"] == {"artifact": "onnx-int8", "passed": True}
    assert json.loads((src / "edgekit-artifact.json").read_text()) == sidecar, "the work copy is left as it was"
