"""The validators behind the hostile catalogue, in-process and fast: each refuses what it must, passes what it must."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import gguf
import pytest

from edgekit.errors import ConfigError, InputError, IntegrityError
from edgekit.runtime.base import SamplingParams
from edgekit.runtime.chat import ChatFormat, render_chat, trim_history
from edgekit.runtime.input_check import ContextOverflow, check_fits, check_token_ids
from tests.hostile.mutate import rewrite_gguf

V = gguf.GGUFValueType
MESSAGES = [{"role": "user", "content": "hi"}]


# ---- sampling and token ids ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": 1e-300}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32 - 1}, "seed"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_sampling_params_refuse_values_that_one_backend_would_misread(kwargs, name):
    with pytest.raises(InputError, match=f"^{name}: "):
        SamplingParams(**kwargs)


def test_sampling_params_accept_the_ordinary_range():
    SamplingParams(temperature=0.7, top_p=0.9, top_k=40, seed=0)
    SamplingParams(temperature=0, top_p=1.0, top_k=0, seed=None)


@pytest.mark.parametrize("ids", [[512], [-1], [2**40], [1.5], "abc", [True]])
def test_token_ids_outside_the_vocabulary_are_refused(ids):
    with pytest.raises(InputError, match="token ids"):
        check_token_ids(ids, 512)


def test_generation_is_capped_at_the_context_end_and_a_full_prompt_is_refused():
    assert check_fits(10, 100, 64) == 54
    with pytest.raises(ContextOverflow, match="64 tokens"):
        check_fits(64, 1, 64)


# ---- GGUF metadata -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_gguf(make_tiny_hf, tmp_path_factory) -> Path:
    from edgekit.export.gguf import export_gguf

    (path,) = export_gguf(make_tiny_hf("llama"), tmp_path_factory.mktemp("gguf"), ["F32"], progress=False)
    return path


@pytest.mark.parametrize(
    ("change", "drop", "words"),
    [
        ({"llama.block_count": (1000, V.UINT32)}, (), "block_count is 1000"),
        ({"llama.block_count": (0, V.UINT32)}, (), "block_count is 0"),
        ({"llama.attention.head_count": (0, V.UINT32)}, (), "head_count is 0"),
        ({"llama.context_length": ("4096", V.STRING)}, (), "context_length must be an integer"),
        ({"tokenizer.ggml.token_type": ([1] * 3, V.ARRAY, V.INT32)}, (), "token_type has 3 entries"),
        ({"tokenizer.ggml.eos_token_id": (10**6, V.UINT32)}, (), "eos_token_id is 1000000"),
        ({}, ("blk.1.ffn_down.weight",), "blk.1.ffn_down.weight is missing"),
    ],
)
def test_gguf_metadata_llama_cpp_would_abort_on_is_an_input_error(good_gguf, tmp_path, change, drop, words):
    from edgekit.runtime.gguf_check import check_gguf

    bad = rewrite_gguf(good_gguf, tmp_path / "bad.gguf", fields=change, drop_tensors=drop)
    with pytest.raises(InputError, match=words):
        check_gguf(bad)


def test_gguf_check_passes_an_untouched_copy(good_gguf, tmp_path):
    from edgekit.runtime.gguf_check import check_gguf

    facts = check_gguf(rewrite_gguf(good_gguf, tmp_path / "copy.gguf"))
    assert facts["n_vocab"] > 0 and facts["context_length"] > 0


# ---- chat templates ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 2**31 }}",
        "{{ 7 ** 99999999 }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ 'x'|center(10**9) }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    ],
)
def test_template_that_would_allocate_gigabytes_stops_at_once(template):
    started = time.monotonic()
    with pytest.raises(InputError, match="chat_template"):
        render_chat(MESSAGES, ChatFormat(template))
    assert time.monotonic() - started < 3


def test_template_that_loops_for_hours_stops_at_the_deadline(monkeypatch):
    from edgekit.runtime import template_limits

    monkeypatch.setattr(template_limits, "MAX_RENDER_SECONDS", 0.5)
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(InputError, match="longer than"):
        render_chat(MESSAGES, ChatFormat(loops))


def test_ordinary_template_renders_as_before():
    tpl = "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% endfor %}{{ '<|assistant|>' * 1 }}"
    assert render_chat(MESSAGES, ChatFormat(tpl)) == "<|user|>hi<|assistant|>"


def test_chat_history_loses_its_oldest_turns_first_and_keeps_the_system_message():
    history = [{"role": "system", "content": "s"}] + [{"role": "user", "content": str(i)} for i in range(6)]
    kept, dropped = trim_history(history, lambda m: 10 * len(m), budget=35)
    assert dropped == 4 and kept[0]["role"] == "system" and kept[-1]["content"] == "5"
    with pytest.raises(ContextOverflow):
        trim_history(history[:2], lambda m: 100, budget=35)


# ---- bundles -----------------------------------------------------------------------------------
def _bundle(tmp_path: Path) -> Path:
    from edgekit.fileio import sha256_file

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "m.gguf").write_bytes(os.urandom(4096))
    files = [{"path": "m.gguf", "bytes": 4096, "sha256": sha256_file(bundle / "m.gguf")}]
    (bundle / "manifest.json").write_text(json.dumps({"files": files, "recommended": {"artifact": "m.gguf"}}))
    return bundle


def test_bundle_file_changed_after_build_is_refused_by_name(tmp_path, monkeypatch):
    from edgekit.pipeline.bundle_check import load_manifest, verify_files

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    bundle = _bundle(tmp_path)
    assert verify_files(bundle, load_manifest(bundle)) == 4096
    raw = bytearray((bundle / "m.gguf").read_bytes())
    raw[100] ^= 0xFF
    (bundle / "m.gguf").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"m\.gguf: file content differs"):
        verify_files(bundle, load_manifest(bundle))


def test_bundle_hash_is_computed_once_while_the_file_is_unchanged(tmp_path, monkeypatch):
    from edgekit.pipeline import bundle_check

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    bundle = _bundle(tmp_path)
    calls = []
    real = bundle_check.sha256_file
    monkeypatch.setattr(bundle_check, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        bundle_check.verify_files(bundle, bundle_check.load_manifest(bundle))
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ({"recommended": {"artifact": "m.gguf"}}, "files: required key is missing"),
        ({"files": "x", "recommended": {"artifact": "m.gguf"}}, "files: Input should be a valid list"),
        ({"files": [], "recommended": {"artifact": "/etc/passwd"}}, "outside the bundle"),
        ({"files": [], "recommended": {"artifact": "m.gguf"}, "schema_version": 2}, "schema_version"),
    ],
)
def test_malformed_manifest_is_one_line_naming_the_key(tmp_path, manifest, words):
    from edgekit.pipeline.bundle_check import load_manifest

    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=words):
        load_manifest(tmp_path)


# ---- profiles and build configs ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("[distill]\nsteps = 3\n".encode("utf-16"), "UTF-16"),
        (bytes(range(256)), "binary"),
        (b"x = " + b"[" * 50000 + b"]" * 50000, "nested too deeply"),
        (b"\xc3\x28 = 1", "not UTF-8"),
    ],
)
def test_unreadable_config_file_is_one_config_error(tmp_path, raw, words):
    from edgekit.pipeline.config import load_build_config

    path = tmp_path / "build.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=words):
        load_build_config(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[distill]\nlr = inf\n", "distill.lr"),
        ("[distill]\nsteps = true\n", "distill.steps"),
        ('[teacher]\ntrust_remote_code = "yes"\n', "teacher.trust_remote_code"),
        ('[bench]\nsuite = "nope"\n', "bench.suite"),
        ("[export]\ngguf_levels = []\n", "export.gguf_levels"),
    ],
)
def test_build_config_refuses_values_that_would_be_coerced(tmp_path, text, key):
    from edgekit.pipeline.config import load_build_config

    path = tmp_path / "build.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_build_config(path)
    assert [p.key for p in info.value.problems] == [key]


def test_set_of_an_unknown_section_is_blamed_on_set():
    from edgekit.pipeline.config import load_build_config

    with pytest.raises(ConfigError) as info:
        load_build_config(None, ["zzz.x=1"])
    assert info.value.problems[0].source == "--set"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("memory_bandwidth_gbs = 10", "memory_bandwidth_gbs = inf", "hardware.memory_bandwidth_gbs"),
        ("threads = 4", "threads = true", "runtime.threads"),
        ('formats = ["gguf"]', 'formats = ["gguf"]\ngguf_ladder = []', ""),
    ],
)
def test_profile_refuses_non_finite_bool_and_empty_ladder(tmp_path, old, new, key):
    from edgekit.targets import load_target
    from tests.test_targets import GOOD

    path = tmp_path / "p.toml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_target(path)
    assert key in [p.key for p in info.value.problems]


# ---- external programs, temporaries, checkpoints -------------------------------------------------------
@pytest.mark.parametrize("host", ["-oProxyCommand=touch x", "host -oX", "a\nb", "", "user@-x"])
def test_ssh_host_that_could_be_an_option_is_refused(host):
    from edgekit.bench.runners import Remote

    with pytest.raises(InputError, match="--ssh"):
        Remote(host)


def test_stale_temporaries_of_dead_processes_go_and_live_ones_stay(tmp_path):
    from edgekit.fileio import TEMP_PREFIX, clean_temporaries

    dead = tmp_path / f"{TEMP_PREFIX}999999999-gguf.abc"
    alive = tmp_path / f"{TEMP_PREFIX}{os.getppid()}-gguf.def"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "base-F32.gguf").write_bytes(b"x" * 100)
    assert clean_temporaries(tmp_path) == 1
    assert not dead.exists() and alive.exists()


def test_checkpoint_whose_step_disagrees_with_its_history_is_refused(tmp_path):
    from edgekit.distill.checkpoint_check import _state

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"step": 10**9, "scalars": {}, "history": [{"step": 1}, {"step": 2}]}))
    with pytest.raises(InputError, match="disagrees with the history"):
        _state(path)


def test_a_gguf_llama_cpp_aborts_on_is_a_native_crash_line_and_a_good_one_is_probed_once(
    good_gguf, tmp_path, monkeypatch
):
    pytest.importorskip("llama_cpp")
    from edgekit import isolate
    from edgekit.errors import NativeCrash
    from edgekit.runtime.llamacpp_probe import probe_once

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    bad = rewrite_gguf(good_gguf, tmp_path / "bad.gguf", fields={"llama.block_count": (1000, V.UINT32)})
    with pytest.raises(NativeCrash, match="SIGABRT"):  # check_gguf would refuse it first; the probe is the net
        probe_once(bad)
    probe_once(good_gguf)
    monkeypatch.setattr(isolate, "run_isolated", lambda *a, **k: pytest.fail("probed twice"))
    probe_once(good_gguf)
