"""Per-stage memory and disk estimates (edgekit.resources) and the preflight that acts on them.

The machine is injected (``Machine``, or a meminfo / cgroup file written to tmp_path), never faked
by patching /proc; the estimates themselves are checked against measured peaks in
bench/bench_sizes.py (bench/results-sizes.json), not here.
"""

from __future__ import annotations

import copy

import pytest

from edgekit import resources
from edgekit.errors import ResourceError
from edgekit.pipeline import preflight
from edgekit.pipeline.preflight_resources import (
    Machine,
    _cgroup_available,
    _meminfo_available,
    build_estimates,
    check,
)
from tests.published_configs import PUBLISHED, hf_config

GiB = 2**30
LEVELS = ["Q8_0", "Q4_K_M"]


def _all_stages(config) -> list[resources.Estimate]:
    student = copy.deepcopy(config)
    student.num_hidden_layers = max(1, config.num_hidden_layers // 2)
    return [
        *resources.gguf_export(config, LEVELS, allocate="fisher").phases,
        resources.onnx_export(config, "int4"),
        resources.prune(config),
        resources.distill_step(config, student),
        resources.bench(config, "Q4_K_M", 4096),
    ]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_estimates_are_sane_for_published_configs(name):
    config = hf_config(PUBLISHED[name])
    weights_bf16 = resources.Sizes.of(config).params * 2
    export = resources.gguf_export(config, LEVELS)
    # the export holds at least the bf16 weights (mapped or resident), and the bounded paths stay within 3x
    assert weights_bf16 < export.peak.memory_bytes < 3 * weights_bf16 + 4 * GiB
    # disk: the base file and both outputs at least
    q8, q4 = (resources.file_bytes(config, q) for q in LEVELS)
    assert export.disk_bytes >= weights_bf16 + q8 + q4
    for e in _all_stages(config):
        assert e.memory_bytes > resources.CONST["python_base"], e.stage
        assert all(t.bytes >= 0 for t in (*e.memory, *e.disk)), e.stage
        assert e.formula().count("GiB") == sum(1 for t in e.memory if t.bytes)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_estimates_grow_with_the_model(name):
    small = hf_config(PUBLISHED[name])
    big = copy.deepcopy(small)
    big.num_hidden_layers *= 2
    big.intermediate_size *= 2
    for a, b in zip(_all_stages(small), _all_stages(big), strict=True):
        assert a.stage == b.stage
        assert b.memory_bytes >= a.memory_bytes, a.stage
        assert b.disk_bytes >= a.disk_bytes, a.stage


def test_refuses_with_the_numbers_when_memory_is_short():
    config = hf_config(PUBLISHED["Llama-3.1-8B"])
    phases = resources.gguf_export(config, LEVELS).phases
    with pytest.raises(ResourceError) as info:
        check("export", phases, Machine(memory_available=6 * GiB, disk_free=10**15))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("export needs about ")
    assert "this machine has 6.0 GiB available" in message
    assert "--ignore-resources" in message
    worst = max((e for e in phases if not e.optional), key=lambda e: e.memory_bytes)
    assert f"{worst.memory_bytes / GiB:.1f} GiB" in message


def test_ignore_resources_turns_the_refusal_into_a_note():
    config = hf_config(PUBLISHED["Llama-3.1-8B"])
    decision = check("export", resources.gguf_export(config, LEVELS).phases, Machine(6 * GiB, 10**15), ignore=True)
    assert any("trying anyway" in n for n in decision.notes)


def test_refuses_when_disk_is_short(tmp_path):
    config = hf_config(PUBLISHED["Llama-3.2-1B"])
    plan = resources.gguf_export(config, LEVELS)
    with pytest.raises(ResourceError, match=r"writes about .* GiB under .*, which has 1.0 GiB free"):
        check("export", plan.phases, Machine(10**15, GiB), disk_bytes=plan.disk_bytes, out=tmp_path)


def test_leaves_out_only_the_allocation_when_only_it_does_not_fit():
    config = hf_config(PUBLISHED["Llama-3.2-1B"])
    phases = resources.gguf_export(config, LEVELS, allocate="fisher").phases
    allocation = next(e for e in phases if e.stage == "export: allocation")
    others = max(e.memory_bytes for e in phases if e is not allocation)
    assert allocation.memory_bytes > others  # the case this test is about
    between = (others + allocation.memory_bytes) // 2
    decision = check("export", phases, Machine(between, 10**15))
    assert decision.left_out == ("export: allocation",)
    assert "llama.cpp's own tensor types" in decision.notes[0]


def test_auto_allocation_probes_only_small_models():
    small, big = (hf_config(PUBLISHED[n]) for n in ("SmolLM2-135M", "Llama-3.2-1B"))
    small.num_hidden_layers = 4  # under auto's 100 M weights
    assert resources.probes(small, "auto") == "fisher"
    assert resources.probes(big, "auto") is None
    assert resources.probes(big, "measure") == "measure"
    assert resources.probes(big, "none") is None
    stages = [e.stage for e in resources.gguf_export(big, LEVELS).phases]
    assert "export: allocation" not in stages


def test_no_refusal_on_a_machine_that_holds_everything():
    config = hf_config(PUBLISHED["Llama-3.2-1B"])
    decision = check("export", _all_stages(config), Machine(10**15, 10**15))
    assert decision.left_out == () and decision.notes == ()


def test_machine_reads_meminfo_and_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    6291456 kB\n")
    assert _meminfo_available(meminfo) == 6 * GiB
    assert _meminfo_available(tmp_path / "missing") is None
    (tmp_path / "memory.max").write_text(f"{4 * GiB}\n")
    (tmp_path / "memory.current").write_text(f"{GiB}\n")
    assert _cgroup_available(tmp_path) == 3 * GiB
    (tmp_path / "memory.max").write_text("max\n")
    assert _cgroup_available(tmp_path) is None


@pytest.fixture
def _backends_present(monkeypatch):
    """Backends are checked before resources; only the resource decision matters here."""
    monkeypatch.setattr(preflight, "check_backends", lambda formats: None)


@pytest.mark.usefixtures("_backends_present")
def test_build_preflight_passes_the_demo_on_a_small_machine(tmp_path):
    """The demo's stages need little more than Python itself: a 2 GiB machine runs the whole build."""
    checked = preflight.run("raspberry-pi-5", teacher="demo", out=tmp_path, machine=Machine(2 * GiB, 10 * GiB))
    assert checked.resource_notes == ()
    assert checked.config.export.allocate != "none"


@pytest.mark.usefixtures("_backends_present")
def test_build_preflight_refuses_before_any_work(tmp_path):
    with pytest.raises(ResourceError, match=r"^build needs about .* this machine has 0.5 GiB available"):
        preflight.run("raspberry-pi-5", teacher="demo", out=tmp_path, machine=Machine(GiB // 2, 10 * GiB))
    assert not any(tmp_path.iterdir())  # nothing was written


def test_build_estimates_cover_every_enabled_stage():
    from edgekit.pipeline.config import load_build_config
    from edgekit.targets import load_target

    teacher = hf_config(PUBLISHED["Llama-3.2-1B"])
    student = copy.deepcopy(teacher)
    student.num_hidden_layers = 3
    config = load_build_config(None)
    stages = [
        e.stage for e in build_estimates(teacher, student, config, {"gguf": ["Q4_K_M"]}, load_target("x86-laptop"))
    ]
    for expected in ("distill", "prune", "recover", "export: write", "export: quantize Q4_K_M", "verify Q4_K_M"):
        assert expected in stages
    assert any(s.startswith("bench") for s in stages)


@pytest.fixture
def small_machine(monkeypatch):
    """Inject a 1 GiB machine at the one seam the commands read it from (not /proc)."""
    from edgekit.pipeline import preflight_resources

    machine = Machine(GiB, 10**15, "a test machine")
    monkeypatch.setattr(preflight_resources, "this_machine", lambda out: machine)
    return machine


@pytest.mark.parametrize("command", ["export", "prune", "distill"])
def test_commands_refuse_before_any_work(command, tiny_llama_dir, tmp_path, small_machine, monkeypatch):
    """A tiny model still needs Python itself (~0.55 GiB) plus its work: make the estimate exceed 1 GiB."""
    import typer
    from typer.testing import CliRunner

    from edgekit.cli import distill as distill_cli
    from edgekit.cli import export as export_cli
    from edgekit.cli import prune as prune_cli

    monkeypatch.setitem(resources.CONST, "python_base", 2 * GiB)
    app = typer.Typer()
    {"export": export_cli, "prune": prune_cli, "distill": distill_cli}[command].register(app)
    app.command("noop", hidden=True)(lambda: None)
    out = tmp_path / "out"
    args = {
        "export": ["export", str(tiny_llama_dir), "--quant", "Q8_0", "--out", str(out)],
        "prune": ["prune", str(tiny_llama_dir), "--ffn", "0.5", "--out", str(out)],
        "distill": ["distill", str(tiny_llama_dir), "--steps", "1", "--out", str(out)],
    }[command]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ResourceError)
    assert f"{command} needs about" in str(result.exception)
    assert "this machine has 1.0 GiB available (a test machine)" in str(result.exception)
    assert not out.exists()
    result = CliRunner().invoke(app, [*args, "--ignore-resources"], catch_exceptions=True)
    assert not isinstance(result.exception, ResourceError)  # tried anyway (whatever came of it)
