"""A wheel of edgekit works as well as an editable install: profiles and suites inside, CLI behaves.

The wheel is built from a copy of the package (so the source tree gets no ``build/`` or egg-info),
installed without dependencies into a folder of its own, and run from a directory outside the
repository with only that folder added to the path: what it finds there came from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the built wheel, the folder it was installed into)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "edgekit", src / "edgekit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)], cwd=work)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("edgekit-*.whl")
    site = work / "site"
    done = _run([*pip, "install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel)], cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    return wheel, site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKIT_TARGETS_DIR")}
    env["PYTHONPATH"] = str(site)
    env["COLUMNS"] = "200"
    return env


def test_wheel_holds_every_profile_and_suite(installed) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, inside in (
        (ROOT / "edgekit" / "profiles", "edgekit/profiles"),
        (ROOT / "edgekit" / "bench" / "suites", "edgekit/bench/suites"),
    ):
        expected = {f"{inside}/{p.name}" for p in folder.glob("*.toml")}
        assert expected, folder
        assert expected <= names, sorted(expected - names)
    assert "edgekit/py.typed" in names


def test_profiles_and_suites_load_from_the_installed_wheel(installed, tmp_path) -> None:
    _, site = installed
    code = (
        "import edgekit, edgekit.targets as t, edgekit.bench.suites as s\n"
        "print(edgekit.__file__)\n"
        "names = t.list_targets(); print(','.join(names))\n"
        "[t.load_target(n) for n in names]\n"
        "print(s.load_suite('quick', None).name)\n"
    )
    r = _run([sys.executable, "-c", code], cwd=tmp_path, env=_env(site))
    assert r.returncode == 0, r.stderr[-2000:]
    origin, names, suite = r.stdout.strip().splitlines()
    assert Path(origin).is_relative_to(site)
    shipped = {p.stem for p in (ROOT / "edgekit" / "profiles").glob("*.toml")}
    assert set(names.split(",")) == shipped
    assert suite == "quick"


def test_cli_from_the_wheel(installed, tmp_path) -> None:
    """targets and plan work; a usage error is one line, exit 2, no traceback."""
    _, site = installed
    cli = [sys.executable, "-m", "edgekit"]
    env = _env(site)
    listed = _run([*cli, "targets"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "raspberry-pi-5" in listed.stdout
    planned = _run([*cli, "plan", "--target", "raspberry-pi-5", "--model", "demo"], cwd=tmp_path, env=env)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "raspberry-pi-5" in planned.stdout and "Q4_K_M" in planned.stdout
    for bad in (["export", "demo", "--bogus-flag"], ["targets", "show"]):
        usage = _run([*cli, *bad], cwd=tmp_path, env=env)
        assert usage.returncode == 2, (bad, usage.stdout, usage.stderr)
        assert "Traceback" not in usage.stderr
        assert len(usage.stderr.strip().splitlines()) == 1, usage.stderr
