"""Where a measurement runs: a local child process (optionally held to a target's cores and memory),
or a real device over SSH. Commands are argument lists; no shell string is built from user input.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD_ALLOWANCE_BYTES = 768 * 2**20  # Python + numpy + llama.cpp code and thread stacks on top of the model


def _parse(stdout: str, artifact: str, stderr: str, code: int) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    killed = code < 0 or code in (137, 9)
    reason = "killed (out of memory?)" if killed else f"exited {code}: {stderr.strip().splitlines()[-1:] or ''}"
    return {"artifact": artifact, "error": reason, "fits": False if killed else None}


def run_local(
    spec: dict[str, Any], *, cores: int | None = None, memory_bytes: int | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """Run ``edgekit.bench.child`` in a fresh process; ``cores`` pins affinity, ``memory_bytes`` caps RLIMIT_AS."""

    def limit() -> None:  # runs in the child before exec
        if cores and hasattr(os, "sched_setaffinity"):
            allowed = sorted(os.sched_getaffinity(0))[:cores]
            os.sched_setaffinity(0, allowed)
        if memory_bytes:
            cap = memory_bytes + CHILD_ALLOWANCE_BYTES
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": str(cores or os.cpu_count() or 1)}
        proc = subprocess.run(
            [sys.executable, "-m", "edgekit.bench.child", fh.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit,
            env=env,
        )
    finally:
        os.unlink(fh.name)
    return _parse(proc.stdout, spec["artifact"], proc.stderr, proc.returncode)


def run_ssh(
    spec: dict[str, Any],
    host: str,
    *,
    port: int = 22,
    identity: str | None = None,
    remote_dir: str = "/tmp/edgekit-bench",
    python: str = "python3",
    timeout: float = 3600,
    extra_ssh: list[str] | None = None,
) -> dict[str, Any]:
    """Push the artifact to ``host``, run the child there (edgekit installed remotely), pull the JSON back."""
    opts = ["-p", str(port), "-o", "BatchMode=yes", *(["-i", identity] if identity else []), *(extra_ssh or [])]
    scp_opts = ["-P", str(port), "-o", "BatchMode=yes", *(["-i", identity] if identity else []), *(extra_ssh or [])]
    artifact = Path(spec["artifact"])
    subprocess.run(["ssh", *opts, host, "mkdir", "-p", remote_dir], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["scp", *scp_opts, "-r", "-q", str(artifact), f"{host}:{remote_dir}/"],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    remote_spec = {**spec, "artifact": f"{remote_dir}/{artifact.name}"}
    spec_path = f"{remote_dir}/spec.json"
    subprocess.run(
        ["ssh", *opts, host, "sh", "-c", f"cat > {spec_path}"],
        input=json.dumps(remote_spec),
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    proc = subprocess.run(
        ["ssh", *opts, host, python, "-m", "edgekit.bench.child", spec_path],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = _parse(proc.stdout, remote_spec["artifact"], proc.stderr, proc.returncode)
    return {**result, "artifact": spec["artifact"], "host": host}
