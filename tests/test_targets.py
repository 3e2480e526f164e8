"""Target profiles: every shipped one loads; broken ones report every problem with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import ConfigError, InputError
from edgekit.formats import LEVELS
from edgekit.targets import list_targets, load_target

REQUIRED = {"jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "android-flagship", "x86-laptop", "cuda-gpu"}

GOOD = """
name = "mine"
[hardware]
device = "test board"
memory_gb = 4
memory_bandwidth_gbs = 10
cpu = "4x A55"
cpu_cores = 4
[budget]
memory_mb = 2000
[export]
formats = ["gguf"]
[runtime]
threads = 4
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def test_shipped_targets_include_required_devices():
    assert set(list_targets()) >= REQUIRED


@pytest.mark.parametrize("name", list_targets())
def test_shipped_target_loads_with_consistent_values_when_validated(name):
    profile = load_target(name)
    assert profile.name == name
    assert profile.budget.memory_mb < profile.hardware.memory_gb * 1024
    for fmt in profile.export.formats:
        assert profile.ladder(fmt), f"{name}: empty {fmt} ladder"
        assert all(LEVELS[q].format == fmt for q in profile.ladder(fmt))


def test_user_profile_path_loads_when_given_instead_of_a_name(tmp_path):
    profile = load_target(_write(tmp_path, GOOD))
    assert profile.name == "mine" and profile.ladder("onnx") == []


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (lambda t: "colour = 'red'\n" + t, "colour", "unknown key"),
        (lambda t: t.replace("cpu_cores = 4", "cpu_cores = 'four'"), "hardware.cpu_cores", "integer"),
        (lambda t: t.replace('cpu = "4x A55"\n', ""), "hardware.cpu", "missing"),
        (lambda t: t.replace("memory_mb = 2000", "memory_mb = -5"), "budget.memory_mb", "greater than 0"),
        (
            lambda t: t.replace('formats = ["gguf"]', 'formats = ["gguf"]\ngguf_ladder = ["Q4_K_M", "Q2_XL"]'),
            "export.gguf_ladder",
            "Q2_XL",
        ),
    ],
)
def test_broken_profile_names_file_and_key_when_one_thing_is_wrong(tmp_path, edit, key, words):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(ConfigError) as info:
        load_target(path)
    [problem] = info.value.problems
    assert problem.source == str(path) and problem.key == key and words in problem.message


def test_broken_profile_reports_every_problem_at_once_when_several_are_wrong(tmp_path):
    text = GOOD.replace("memory_mb = 2000", "memory_mb = 0").replace("threads = 4", "threads = 4\nturbo = true")
    text = text.replace('device = "test board"\n', "")
    with pytest.raises(ConfigError) as info:
        load_target(_write(tmp_path, text))
    assert {p.key for p in info.value.problems} == {"hardware.device", "budget.memory_mb", "runtime.turbo"}
    assert all(str(tmp_path) in line for line in info.value.lines())


def test_unknown_target_name_lists_shipped_targets():
    with pytest.raises(InputError, match="raspberry-pi-5"):
        load_target("toaster-9000")


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_target(path)


CITED_HARDWARE_KEYS = ("memory_gb", "memory_bandwidth_gbs", "cpu", "cpu_cores", "cuda_arch")


@pytest.mark.parametrize("name", list_targets())
def test_shipped_target_cites_a_source_for_every_hardware_figure(name):
    from edgekit.targets import targets_dir

    section, uncited = "", []
    for line in (targets_dir() / f"{name}.toml").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[] ")
        key = line.split("=")[0].strip()
        if section == "hardware" and key in CITED_HARDWARE_KEYS and "#" not in line.split("=", 1)[1]:
            uncited.append(key)
    assert not uncited, f"{name}: no source comment for {', '.join(uncited)}"
