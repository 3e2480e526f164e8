"""Benchmark harness: the memory sampler, limited children, suites, SSH, the recommendation."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.bench import recommend
from edgekit.bench.memory import PeakMemory
from edgekit.bench.runners import run_local, run_ssh
from edgekit.bench.suites import list_suites, load_suite
from edgekit.errors import ConfigError, InputError
from edgekit.targets import load_target

MiB = 2**20


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, make_tiny_hf) -> Path:
    from edgekit.export.gguf import export_gguf

    (path,) = export_gguf(make_tiny_hf("llama"), tmp_path_factory.mktemp("bench-gguf"), ["Q8_0"], progress=False)
    return path


def _spec(path: Path) -> dict:
    return {
        "artifact": str(path),
        "options": {"n_threads": 1},
        "prompt_lengths": [16],
        "new_tokens": 8,
        "repeats": 1,
        "warmup": 0,
    }


def test_memory_sampler_sees_a_known_allocation():
    with PeakMemory() as before:
        time.sleep(0.02)
    with PeakMemory() as mem:
        block = np.ones(200 * MiB, dtype=np.uint8)  # touched pages: resident, not just reserved
        time.sleep(0.05)
        del block
    grown = mem.peak_rss_bytes - before.peak_rss_bytes
    assert 190 * MiB <= grown <= 260 * MiB, grown / MiB
    assert PeakMemory.os_max_rss_bytes() >= mem.peak_rss_bytes * 0.9


def test_child_measures_an_artifact(tiny_gguf):
    r = run_local(_spec(tiny_gguf))
    assert r.get("error") is None, r
    assert r["decode_tokens_per_s"]["median"] > 0 and r["ttft_s"]["median"] > 0
    assert r["file_size_bytes"] == tiny_gguf.stat().st_size
    # the sampled peak and the kernel's high-water mark describe the same process
    assert abs(r["peak_rss_bytes"] - r["os_max_rss_bytes"]) <= 0.10 * r["os_max_rss_bytes"]


def test_memory_limited_child_reports_does_not_fit_instead_of_dying(tiny_gguf):
    weights_too_big = run_local(_spec(tiny_gguf), memory_bytes=tiny_gguf.stat().st_size // 2)
    assert weights_too_big["fits"] is False and "does not fit" in weights_too_big["error"]

    over_budget = run_local(_spec(tiny_gguf), memory_bytes=tiny_gguf.stat().st_size + MiB)
    assert over_budget["fits"] is False  # the interpreter and runtime need more than the weights
    assert "MiB" in (over_budget.get("fit_note") or over_budget.get("error", ""))

    generous = run_local(_spec(tiny_gguf), memory_bytes=2048 * MiB)
    assert generous["fits"] is True and generous.get("error") is None


def test_every_suite_file_loads_and_bad_suites_name_the_key(tmp_path):
    names = list_suites()
    assert {"quick", "full", "quant-sweep"} <= set(names)
    for name in names:
        suite = load_suite(name)
        assert suite.repeats >= 1 and suite.prompt_lengths
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nprompt_lengths = [0]\nnew_tokens = 8\nrepeats = 1\nspeed = "fast"\n')
    with pytest.raises(ConfigError) as info:
        load_suite(bad)
    message = str(info.value)
    assert str(bad) in message and "speed" in message and "prompt_lengths" in message


def _result(quant: str, size_mib: float, kl: float, decode: float = 50.0, error: str | None = None) -> dict:
    r = {
        "artifact": f"gguf/m-{quant}.gguf",
        "quant": quant,
        "file_size_bytes": int(size_mib * MiB),
        "kv_bytes": 0,
        "peak_rss_bytes": int((size_mib + 100) * MiB),
        "decode_tokens_per_s": {"median": decode},
        "quality": {"vs_fp": {"mean_kl": kl}},
    }
    return {"artifact": r["artifact"], "error": error} if error else r


def test_recommendation_picks_the_most_faithful_level_that_fits_and_is_fast_enough():
    target = load_target("raspberry-pi-5")  # 5000 MiB budget, 17 GB/s at 58 % (calibrated), at least 5 tokens/s
    results = {
        "results": [
            _result("Q4_K_M", 1000, 0.08),
            _result("Q5_K_M", 1200, 0.03),
            _result("Q8_0", 4990, 0.005),  # fits the file but not with 100 MiB of runtime on top
            _result("F16", 1, 0.0, error="crashed"),
        ]
    }
    pick = recommend(results, target)
    assert pick["quant"] == "Q5_K_M" and pick["basis"] == "predicted"
    assert "Q5_K_M" in pick["reason"] and "raspberry-pi-5" in pick["reason"] and "calibrated on" in pick["reason"]
    assert pick["decode_low_tokens_per_s"] < pick["decode_tokens_per_s"] < pick["decode_high_tokens_per_s"]

    # a floor only the smallest file meets at 58 % of 17 GB/s (0.58 x 17e9 / 1200 MiB = 7.8 tokens/s)
    fast = target.model_copy(update={"budget": target.budget.model_copy(update={"min_decode_tokens_per_s": 8.5})})
    assert recommend(results, fast)["quant"] == "Q4_K_M"

    # measured on the device: its own decode speed decides, not the prediction
    slow = {"results": [_result("Q4_K_M", 1000, 0.08, decode=3.0), _result("Q5_K_M", 1200, 0.03, decode=2.0)]}
    assert recommend(slow, target, on_device=True)["artifact"] is None
    assert "no level fits" in recommend(slow, target, on_device=True)["reason"]


def test_recommendation_flips_to_a_lower_level_when_the_calibrated_speed_falls_under_the_floor():
    """The bare roofline would pass Q5_K_M; llama.cpp's calibrated 58 % of it does not, so Q4_K_M ships."""
    target = load_target("raspberry-pi-5")
    floor = target.budget.model_copy(update={"min_decode_tokens_per_s": 10.0})
    calibrated = target.model_copy(update={"budget": floor})
    bare = calibrated.model_copy(update={"calibration": None})
    results = {"results": [_result("Q4_K_M", 900, 0.08), _result("Q5_K_M", 1100, 0.03)]}
    # roofline: 17e9 / 1100 MiB = 14.7 tokens/s; calibrated: 0.58 x that = 8.5, under the floor of 10
    assert recommend(results, bare)["quant"] == "Q5_K_M"
    pick = recommend(results, calibrated)
    assert pick["quant"] == "Q4_K_M"  # 0.58 x 17e9 / 900 MiB = 10.4 tokens/s
    assert pick["decode_tokens_per_s"] == pytest.approx(0.58 * 17e9 / (900 * MiB))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_sshd(tmp_path):
    """An sshd on a free local port that accepts one fresh key; skipped where sshd cannot run."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if not sshd or not shutil.which("ssh") or not shutil.which("ssh-keygen") or os.geteuid() != 0:
        pytest.skip("needs sshd, ssh and ssh-keygen, run as root")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "user.pub").read_text())
    os.chmod(tmp_path / "authorized_keys", 0o600)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"sshd would not start: {proc.stderr.read().decode()[-300:]}")
        time.sleep(0.1)
    yield port, tmp_path / "user"
    proc.terminate()
    proc.wait(timeout=10)


def test_ssh_runner_round_trips_against_a_local_sshd(local_sshd, tiny_gguf, tmp_path):
    port, key = local_sshd
    no_known_hosts = ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}"]
    r = run_ssh(
        _spec(tiny_gguf),
        "root@127.0.0.1",
        port=port,
        identity=str(key),
        remote_dir=str(tmp_path / "remote"),
        python=sys.executable,
        extra_ssh=no_known_hosts,
    )
    assert r.get("error") is None, r
    assert r["host"] == "root@127.0.0.1" and r["artifact"] == str(tiny_gguf)
    assert r["decode_tokens_per_s"]["median"] > 0
    assert (tmp_path / "remote" / tiny_gguf.name).read_bytes() == tiny_gguf.read_bytes()


def test_recommendation_falls_back_to_the_smallest_level_and_says_so_when_no_quality_was_measured():
    target = load_target("raspberry-pi-5")
    plain = [_result("Q8_0", 900, 0.0), _result("Q4_K_M", 500, 0.0)]
    for r in plain:
        r.pop("quality")
    pick = recommend({"results": plain}, target)
    assert pick["quant"] == "Q4_K_M" and "no quality was measured" in pick["reason"]
    assert "inf" not in pick["reason"]


def test_suite_over_ssh_records_the_device_and_recommends_from_measured_speed(
    local_sshd, tiny_gguf, make_tiny_hf, tmp_path
):
    from edgekit.bench import run_suite
    from edgekit.bench.runners import Remote
    from edgekit.bench.schema import validate_results

    port, key = local_sshd
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nprompt_lengths = [16]\nnew_tokens = 8\nrepeats = 1\nwarmup = 0\nquality_tokens = 0\n')
    remote = Remote(
        "root@127.0.0.1",
        port=port,
        identity=str(key),
        remote_dir=str(tmp_path / "device"),
        python=sys.executable,
        extra_ssh=["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}"],
    )
    target = load_target("raspberry-pi-5")
    results = run_suite([tiny_gguf], suite, target=target, reference_model=make_tiny_hf("llama"), remote=remote)
    validate_results(results)
    (r,) = results["results"]
    assert r.get("error") is None and r["host"] == "root@127.0.0.1" and results["remote_host"] == "root@127.0.0.1"
    assert r["threads"] == target.runtime.threads  # the device's threads, not this host's core count
    assert results["host"]["remote_bandwidth_gbs"] == 17
    assert recommend(results, target, on_device=True)["basis"] == "measured"


def test_paused_sampler_misses_a_transient_but_sees_what_is_kept_at_the_edge():
    with PeakMemory() as mem:
        baseline = mem.peak_rss_bytes
        with mem.paused():
            spike = np.ones(200 * MiB, dtype=np.uint8)
            time.sleep(0.05)
            del spike
        transient = mem.peak_rss_bytes - baseline
        with mem.paused():
            kept = np.ones(200 * MiB, dtype=np.uint8)
        retained = mem.peak_rss_bytes - baseline
        del kept
    assert transient < 50 * MiB, transient / MiB  # VmHWM is the cross-check for spikes like this
    assert retained >= 190 * MiB, retained / MiB


def test_target_suite_takes_the_profiles_bench_settings_and_needs_a_target():
    from edgekit.targets import load_target

    profile = load_target("raspberry-pi-5")
    suite = load_suite("target", profile)
    assert suite.prompt_lengths == profile.bench.prompt_lengths
    assert (suite.new_tokens, suite.repeats, suite.warmup) == (
        profile.bench.new_tokens,
        profile.bench.repeats,
        profile.bench.warmup,
    )
    assert suite.name == "target:raspberry-pi-5"
    with pytest.raises(InputError, match="--target"):
        load_suite("target")
