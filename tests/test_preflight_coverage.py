"""Every config value a stage rejects is rejected by preflight, in seconds, naming the key.

Each case shows the stage's own validator refusing the value (so the table stays honest) and then
``preflight.run`` refusing the same value before any model is loaded or trained. Levels come from
the one table in ``edgekit.formats``; nothing here lists which levels are legal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import ConfigError, EdgekitError
from edgekit.formats import LEVELS, export_levels
from edgekit.pipeline import preflight


@pytest.fixture(autouse=True)
def _backends_present(monkeypatch):
    """Backends are checked after values; here only the values matter (llama.cpp may not be built)."""
    monkeypatch.setattr(preflight, "check_backends", lambda formats: None)


def _preflight(tmp_path, *overrides: str, target: str = "raspberry-pi-5"):
    return preflight.run(target, teacher="demo", overrides=list(overrides), out=tmp_path)


def _rejected_keys(tmp_path, *overrides: str, target: str = "raspberry-pi-5") -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        _preflight(tmp_path, *overrides, target=target)
    return {p.key: f"{p.source}: {p.message}" for p in info.value.problems}


def _stage_rejects(call) -> str | None:
    try:
        call()
    except (EdgekitError, ValueError, Exception) as exc:
        return str(exc)
    return None


def test_the_defaults_pass_preflight(tmp_path):
    checked = _preflight(tmp_path)
    assert checked.plan == {"gguf": ["Q4_K_M", "Q5_K_M", "Q8_0"]}


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_every_level_the_exporter_rejects_is_rejected_by_preflight(fmt, tmp_path):
    from edgekit.export.gguf import export_gguf
    from edgekit.export.onnx import export_onnx

    exporter = {"gguf": export_gguf, "onnx": export_onnx}[fmt]
    for name in [q.name for q in LEVELS.values() if q.format == fmt]:
        refusal = _stage_rejects(lambda n=name: exporter(tmp_path / "no-model", tmp_path / "o", [n]))
        stage_refuses_level = refusal is not None and name in refusal and "level" in refusal
        assert stage_refuses_level == (name not in export_levels(fmt)), (name, refusal)
        if not stage_refuses_level:
            continue
        keys = _rejected_keys(tmp_path, f"export.formats=['{fmt}']", f"export.{fmt}_levels=['{name}']")
        assert f"export.{fmt}_levels" in keys and name in keys[f"export.{fmt}_levels"]
        assert keys[f"export.{fmt}_levels"].startswith("--set")


def test_a_profile_ladder_level_the_exporter_cannot_write_is_rejected_naming_the_profile(tmp_path):
    """cuda-gpu's ladder lists levels for planning; any that cannot be exported stop the build in preflight."""
    from edgekit.targets import load_target

    profile = load_target("cuda-gpu")
    unexportable = [q for q in profile.ladder("onnx") if q not in export_levels("onnx")]
    if not unexportable:
        pytest.skip("every level of cuda-gpu's ONNX ladder is exportable now")
    keys = _rejected_keys(tmp_path, target="cuda-gpu")
    assert "export.onnx_ladder" in keys and keys["export.onnx_ladder"].startswith(str(profile.source))


def test_an_unknown_bench_suite_is_rejected(tmp_path):
    from edgekit.bench.suites import load_suite

    assert _stage_rejects(lambda: load_suite("no-such-suite", None))
    assert "bench.suite" in _rejected_keys(tmp_path, "bench.suite=no-such-suite")
    # the build config itself refuses a suite name it cannot find, so a typo fails even with bench off
    assert "bench.suite" in _rejected_keys(tmp_path, "bench.suite=no-such-suite", "bench.enabled=false")


def test_missing_training_text_is_rejected(tmp_path):
    from edgekit.data import load_texts

    missing = tmp_path / "missing.txt"
    assert _stage_rejects(lambda: load_texts(missing))
    assert "data.train" in _rejected_keys(tmp_path, f"data.train='{missing}'")


def test_removing_every_layer_is_rejected(tmp_path):
    """The prune stage's layer selection refuses it; preflight asks the same check with the student's depth."""
    import torch

    from edgekit.models import tiny_model
    from edgekit.prune import PrunePlan, prune_model

    model = tiny_model()
    n = model.config.num_hidden_layers
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    assert "cannot remove" in _stage_rejects(lambda: prune_model(model, PrunePlan(layers=n), ids))
    keys = _rejected_keys(tmp_path, "distill.student_layers=3", "prune.layers=3")
    assert "prune.layers" in keys and "cannot remove 3 of 3 layers" in keys["prune.layers"]


@pytest.mark.parametrize(("key", "value"), [("student_layers", 99), ("student_hidden", 4096)])
def test_a_student_the_distill_stage_cannot_derive_is_rejected(key, value, tmp_path):
    from transformers import AutoModelForCausalLM

    from edgekit.demo import demo_config
    from edgekit.distill import derive_student

    teacher = AutoModelForCausalLM.from_config(demo_config())
    shape = {"num_layers": value} if key == "student_layers" else {"hidden_size": value}
    assert _stage_rejects(lambda: derive_student(teacher, **shape))
    keys = _rejected_keys(tmp_path, f"distill.{key}={value}")
    assert f"distill.{key}" in keys and str(value) in keys[f"distill.{key}"]


def test_a_keep_output_type_the_quantizer_refuses_is_rejected(tmp_path):
    from edgekit.export.quantize import check_overrides, keep_output_overrides
    from edgekit.targets import load_target

    assert _stage_rejects(lambda: check_overrides(keep_output_overrides("Q9_X")))
    source = load_target("raspberry-pi-5").source
    text = Path(source).read_text(encoding="utf-8")
    text = text.replace('formats = ["gguf"]', 'formats = ["gguf"]\nkeep_output_tensor = "Q9_X"')
    profile = tmp_path / "pi.toml"
    profile.write_text(text, encoding="utf-8")
    keys = _rejected_keys(tmp_path, target=str(profile))
    assert "export.keep_output_tensor" in keys and keys["export.keep_output_tensor"].startswith(str(profile))


def test_every_problem_is_reported_at_once(tmp_path):
    # problems only preflight can see (a config that does not validate stops before them, with all its own)
    keys = _rejected_keys(tmp_path, "prune.layers=9", f"data.train='{tmp_path / 'x.txt'}'")
    assert {"prune.layers", "data.train"} <= set(keys)


def test_a_pruned_shape_transformers_cannot_reload_is_rejected(tmp_path):
    """Hidden pruning to a width the heads do not divide: the prune stage's save refuses it; preflight first."""
    import torch

    from edgekit.models import load_model, save_model, tiny_model
    from edgekit.prune import PrunePlan, prune_model

    model = tiny_model()
    pruned, _ = prune_model(model, PrunePlan(hidden=0.1), torch.randint(0, model.config.vocab_size, (2, 16)))
    saved_and_loaded = lambda: load_model(save_model(pruned, None, tmp_path / "pruned"))  # noqa: E731
    overrides = ("prune.hidden=0.1", "export.gguf_levels=['Q8_0']")
    if _stage_rejects(saved_and_loaded) is None:  # transformers < 5 does not validate head counts
        _preflight(tmp_path, *overrides)  # then preflight must not refuse it either
        return
    keys = _rejected_keys(tmp_path, *overrides)
    assert "prune" in keys and "hidden size" in keys["prune"]
