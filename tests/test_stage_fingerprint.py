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


def _code(stage: str) -> set[str]:
    return set(fingerprint.stage_fingerprint(stage)["code"])


def test_a_stage_covers_the_modules_it_runs_and_not_the_others():
    """Closures follow imports (lazy ones too): shared modules count for every stage that can run them."""
    assert "edgekit/prune/surgery.py" in _code("prune")
    assert "edgekit/distill/trainer.py" in _code("distill")
    assert "edgekit/export/quantize.py" in _code("export")
    assert "edgekit/bench/harness.py" in _code("bench") and "edgekit/bench/harness.py" not in _code("distill")
    assert "edgekit/pipeline/stages.py::run_prune" in _code("prune") and "edgekit/pipeline/stages.py" not in _code(
        "prune"
    )
    assert set(fingerprint.stage_fingerprint("export")["tools"]) >= {"llama-cpp-python", "onnxruntime", "gguf"}


@pytest.mark.parametrize("stage", ["prune", "export"])
def test_a_changed_stage_module_reruns_that_stage_and_the_ones_after_it(stage, tmp_path, monkeypatch):
    """A module in this stage's code but in no earlier stage's reruns this stage and every later one."""
    earlier = CHAIN[: CHAIN.index(stage)]
    own = sorted(f for f in _code(stage) - set().union(*(_code(e) for e in earlier)) if "::" not in f)
    own = own or [f"pipeline/stages.py::{fingerprint.STAGE_FUNCTIONS[stage]}"]
    calls: list[str] = []
    _chain(tmp_path, calls)
    assert calls == list(CHAIN)
    calls.clear()
    _chain(tmp_path, calls)
    assert calls == []  # nothing changed: everything reused
    if "::" in own[0]:
        _edit_function(monkeypatch, fingerprint.STAGE_FUNCTIONS[stage])
    else:
        _edit(monkeypatch, own[0].removeprefix("edgekit/"))
    _chain(tmp_path, calls)
    assert calls == list(CHAIN[CHAIN.index(stage) :]), own[0]


def test_a_shared_module_reruns_every_stage_that_runs_it(tmp_path, monkeypatch):
    calls: list[str] = []
    _chain(tmp_path, calls)
    calls.clear()
    _edit(monkeypatch, "prune/surgery.py")
    _chain(tmp_path, calls)
    first = next(s for s in CHAIN if "edgekit/prune/surgery.py" in _code(s))
    assert calls == list(CHAIN[CHAIN.index(first) :])


def _edit_function(monkeypatch, function: str) -> None:
    original = fingerprint._source
    stages = fingerprint.PACKAGE_ROOT / "pipeline" / "stages.py"

    def edited(path):
        data = original(path)
        return (
            data.replace(f"def {function}(".encode(), f"def {function}(  # changed\n".encode(), 1)
            if path == stages
            else data
        )

    monkeypatch.setattr(fingerprint, "_source", edited)
    fingerprint.clear_cache()


def test_a_change_to_one_stages_function_in_stages_py_reruns_only_from_that_stage(tmp_path, monkeypatch):
    calls: list[str] = []
    _chain(tmp_path, calls)
    calls.clear()
    _edit_function(monkeypatch, "run_export")
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
    _edit_function(monkeypatch, "run_prune")
    calls: list[str] = []
    with pytest.raises(WouldRun) as stop:
        _chain(tmp_path, calls, dry_run=True)
    assert calls == [] and stop.value.name == "prune"
    before = next((tmp_path / "stages").glob("prune-*/stage.json"))
    from edgekit.fileio import read_json

    changed = differences(read_json(before), stop.value.identity)
    assert changed == ["code edgekit/pipeline/stages.py::run_prune changed"]


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
