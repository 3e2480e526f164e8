"""A disk that fills up mid-export: one line, exit 7, nothing half-written under a final name.

The output folder is a small tmpfs mounted in a private user and mount namespace (``unshare -rm``),
so the writes really fail with a full filesystem, whichever writer hits it first (gguf-py's tensor
writer reports a short write without ENOSPC; llama.cpp's quantizer returns a status). Skipped where
the kernel does not allow unprivileged namespaces.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.fixtures import build

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(probe))}"],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("hostile-fixtures")) / "hf"


@pytest.mark.parametrize(
    ("size", "where"),
    [("300k", "the first GGUF file"), ("6500k", "llama.cpp's quantizer, after a complete F32 file")],
)
def test_export_onto_a_full_disk_is_one_line_exit_7_and_leaves_no_partial_file(hf_model, tmp_path, size, where):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("unprivileged user and mount namespaces (unshare -rm) are not available here")
    out = tmp_path / "small"
    out.mkdir()
    export = [sys.executable, "-m", "edgekit", "export", str(hf_model), "--quant", "F32,Q8_0"]
    export += ["--allocate", "none", "--ignore-resources", "--out", str(out)]  # past preflight's disk check
    script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(out))} && cd {shlex.quote(str(ROOT))} && "
    script += f"{shlex.join(export)}; echo rc=$?; ls -A {shlex.quote(str(out))}"
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0], (where, done.stderr[-2000:])
    assert "rc=7" in done.stdout, done.stdout
    left = done.stdout.split("rc=7", 1)[1].split()
    assert not [name for name in left if name.startswith(".edgekit-tmp")], f"temporaries left behind: {left}"
    assert "hf-Q8_0.gguf" not in left, "no quantized file under its final name"
    if size == "300k":
        assert left == [], f"nothing is complete, so nothing may be there: {left}"
