"""Stage keys cover the stage's own code and the tools it calls; --explain says what would run and why."""

from __future__ import annotations

import pytest

from edgekit.pipeline import fingerprint
from edgekit.pipeline.explain import differences
from edgekit.pipeline.runner import StageRunner, WouldRun

CHAIN = ("distill", "prune", "recover", "export")


@pytest.fixture(autouse=True)
def _fresh_fingerprints():
    fingerprint.clear_cache()
    yield
    fingerprint.clear_cache()


def _chain(workdir, calls: list[str], dry_run: bool = False) -> list:
    """The build's model stages as a chain: each consumes the previous one's key, as build.py wires them."""
    runner = StageRunner(workdir, dry_run=dry_run)
    key, results = "teacher", []

    def body(name):
        def run(out, scratch):
            calls.append(name)
            (out / "x").write_text(name)
            return {}

        return run

    for name in CHAIN:
        result = runner.run(name, {"input": key}, body(name))
        key = result.key
        results.append(result)
    return results


def _edit(monkeypatch, relative: str) -> None:
    """Make ``edgekit/<relative>`` read as if someone had changed it."""
    original = fingerprint._source
    target = fingerprint.PACKAGE_ROOT / relative

    def edited(path):
        data = original(path)
        return data + b"\n# changed\n" if path == target else data

    monkeypatch.setattr(fingerprint, "_source", edited)
    fingerprint.clear_cache()


def test_a_stage_covers_the_modules_it_runs_and_not_the_others():
    prune = fingerprint.stage_fingerprint("prune")["code"]
    distill = fingerprint.stage_fingerprint("distill")["code"]
    assert "edgekit/prune/surgery.py" in prune and "edgekit/prune/surgery.py" not in distill
    assert "edgekit/distill/trainer.py" in distill and "edgekit/distill/trainer.py" not in prune
    assert "edgekit/export/quantize.py" in fingerprint.stage_fingerprint("export")["code"]
    assert set(fingerprint.stage_fingerprint("export")["tools"]) >= {"llama-cpp-python", "onnxruntime", "gguf"}


def test_a_changed_stage_module_reruns_that_stage_and_the_ones_after_it(tmp_path, monkeypatch):
    calls: list[str] = []
    _chain(tmp_path, calls)
    assert calls == list(CHAIN)
    calls.clear()
    _chain(tmp_path, calls)
    assert calls == []  # nothing changed: everything reused
    _edit(monkeypatch, "prune/surgery.py")
    _chain(tmp_path, calls)
    assert calls == ["prune", "recover", "export"]


def test_a_change_to_one_stages_function_in_stages_py_reruns_only_from_that_stage(tmp_path, monkeypatch):
    calls: list[str] = []
    _chain(tmp_path, calls)
    calls.clear()
    original = fingerprint._source
    stages = fingerprint.PACKAGE_ROOT / "pipeline" / "stages.py"

    def edited(path):
        data = original(path)
        return data.replace(b"def run_export(", b"def run_export(  # changed\n", 1) if path == stages else data

    monkeypatch.setattr(fingerprint, "_source", edited)
    fingerprint.clear_cache()
    _chain(tmp_path, calls)
    assert calls == ["export"]


def test_a_new_tool_version_reruns_the_stages_that_call_it(tmp_path, monkeypatch):
    calls: list[str] = []
    _chain(tmp_path, calls)
    calls.clear()
    real = fingerprint.metadata.version

    def version(name):
        return "999.0" if name == "llama-cpp-python" else real(name)

    monkeypatch.setattr(fingerprint.metadata, "version", version)
    fingerprint.clear_cache()
    _chain(tmp_path, calls)
    assert calls == ["export"]  # distill, prune and recover do not call llama.cpp


def test_dry_run_names_the_first_stage_to_run_and_what_changed(tmp_path, monkeypatch):
    _chain(tmp_path, [])
    _edit(monkeypatch, "prune/plan.py")
    calls: list[str] = []
    with pytest.raises(WouldRun) as stop:
        _chain(tmp_path, calls, dry_run=True)
    assert calls == [] and stop.value.name == "prune"
    before = next((tmp_path / "stages").glob("prune-*/stage.json"))
    from edgekit.fileio import read_json

    assert differences(read_json(before), stop.value.identity) == ["code edgekit/prune/plan.py changed"]


def test_differences_word_tools_and_settings():
    before = {"spec": {"prune": {"ffn": 0.3}}, "tools": {"torch": "2.5"}, "key": "a"}
    now = {"spec": {"prune": {"ffn": 0.5}}, "tools": {"torch": "2.6"}, "key": "b"}
    assert differences(before, now) == ["spec.prune.ffn: 0.3 -> 0.5", "torch 2.5 -> 2.6"]


def test_build_explain_lists_every_stage_without_running_any(tmp_path, monkeypatch):
    from edgekit.pipeline import preflight
    from edgekit.pipeline.build import STAGES
    from edgekit.pipeline.explain import explain_build

    monkeypatch.setattr(preflight, "check_backends", lambda formats: None)
    lines = explain_build("raspberry-pi-5", out=tmp_path)
    assert lines[0].startswith("preflight: passed")
    for stage in STAGES:
        assert any(line.startswith(stage) for line in lines), (stage, lines)
    assert not (tmp_path / ".work").exists() or not list((tmp_path / ".work").rglob("stage.json"))
