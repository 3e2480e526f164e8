"""llama.cpp's extra CPU weight buffers: used where they work, dropped (and remembered) where they crash."""

from __future__ import annotations

import pytest

from edgekit.errors import NativeCrash
from edgekit.runtime import llamacpp_probe
from edgekit.runtime.llamacpp_buffers import host_key, weight_buffers


@pytest.fixture
def probes(tmp_path, monkeypatch):
    """Record each isolated probe as (file name, extra buffers?) and crash the ones with extra buffers."""
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[tuple[str, bool]] = []

    def fake_run_isolated(fn, file, extra, **kwargs):
        calls.append((file.rsplit("/", 1)[-1], extra))
        if extra:
            raise NativeCrash(file, "the runtime crashed (SIGSEGV) while loading it in llama.cpp")
        return 32

    monkeypatch.setattr("edgekit.isolate.run_isolated", fake_run_isolated)
    return calls


def test_a_crash_with_extra_buffers_falls_back_to_plain_ones_and_remembers_the_machine(tmp_path, probes):
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"a")
    second.write_bytes(b"b")
    assert llamacpp_probe.probe_once(first) is False
    assert probes == [("a.gguf", True), ("a.gguf", False)]
    assert host_key() in llamacpp_probe._load()[llamacpp_probe.HOSTS_WITHOUT_EXTRA_BUFFERS]
    assert llamacpp_probe.probe_once(second) is False  # known machine: no second crash
    assert probes[2:] == [("b.gguf", False)]
    assert llamacpp_probe.probe_once(first) is False  # probed file: no child at all
    assert len(probes) == 3


def test_a_crash_without_extra_buffers_is_still_an_error(tmp_path, probes, monkeypatch):
    def always_crash(fn, file, extra, **kwargs):
        raise NativeCrash(file, "the runtime crashed (SIGABRT) while loading it in llama.cpp")

    monkeypatch.setattr("edgekit.isolate.run_isolated", always_crash)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"x")
    with pytest.raises(NativeCrash, match="SIGABRT"):
        llamacpp_probe.probe_once(bad)
    assert llamacpp_probe.HOSTS_WITHOUT_EXTRA_BUFFERS not in llamacpp_probe._load()


def test_weight_buffers_switches_the_default_only_inside_the_block():
    llama = pytest.importorskip("llama_cpp.llama")
    low_level = llama.llama_cpp
    if not hasattr(low_level.llama_model_default_params(), "use_extra_bufts"):
        pytest.skip("this llama-cpp-python has no extra buffer types")
    assert low_level.llama_model_default_params().use_extra_bufts
    with weight_buffers(False):
        assert not low_level.llama_model_default_params().use_extra_bufts
    assert low_level.llama_model_default_params().use_extra_bufts
    with weight_buffers(True):
        assert low_level.llama_model_default_params().use_extra_bufts
