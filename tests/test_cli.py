"""The command line: one clear line per problem, non-zero exits, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _edgekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_unknown_target_is_one_line_error_with_exit_code_2():
    result = _edgekit("targets", "show", "toaster-9000")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "toaster-9000" in lines[0] and "raspberry-pi-5" in lines[0]


def test_debug_flag_shows_the_traceback():
    result = _edgekit("--debug", "targets", "show", "toaster-9000")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_broken_profile_prints_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nbogus = 1\n[runtime]\nthreads = 0\n')
    result = _edgekit("targets", "validate", str(bad))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert any("bogus: unknown key" in line for line in lines)
    assert any("runtime.threads" in line for line in lines)
    assert all(str(bad) in line for line in lines)


def test_targets_lists_every_shipped_profile():
    result = _edgekit("targets")
    assert result.returncode == 0
    for name in ("jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "android-flagship", "x86-laptop", "cuda-gpu"):
        assert name in result.stdout


def test_help_lists_the_pipeline_commands():
    result = _edgekit("--help")
    assert result.returncode == 0
    for command in ("build", "inspect", "targets"):
        assert command in result.stdout
