"""Where a measurement runs: a local child process (optionally held to a target's cores and memory),
or a real device over SSH. Commands are argument lists; no shell string is built from user input.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError

CHILD_ALLOWANCE_BYTES = 768 * 2**20  # Python + numpy + llama.cpp code and thread stacks on top of the model


def _parse(stdout: str, artifact: str, stderr: str, code: int) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    killed = code < 0 or code in (137, 9)
    reason = "killed (out of memory?)" if killed else f"exited {code}: {stderr.strip().splitlines()[-1:] or ''}"
    return {"artifact": artifact, "error": reason, "fits": False if killed else None}


def run_local(
    spec: dict[str, Any],
    *,
    cores: int | None = None,
    memory_bytes: int | None = None,
    timeout: float = 1800,
    limited_timeout: float = 600,
) -> dict[str, Any]:
    """Run ``edgekit.bench.child`` in a fresh process; ``cores`` pins affinity, ``memory_bytes`` is the budget.

    Under a budget the answer is "does not fit" (``fits: False`` with the reason) rather than a crash:
    a file larger than the budget is refused without running; otherwise the child runs capped at the
    budget plus an allowance for the interpreter (RLIMIT_AS), and a measured peak RSS over the budget,
    an allocation failure, a kill or a stall (``limited_timeout``) all report as not fitting.
    """
    artifact = Path(spec["artifact"])
    if memory_bytes:
        size = _artifact_bytes(artifact)
        if size > memory_bytes:
            return _does_not_fit(spec, f"the weights alone ({size / 2**20:,.1f} MiB) exceed the budget", memory_bytes)

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
            timeout=min(timeout, limited_timeout) if memory_bytes else timeout,
            preexec_fn=limit,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        if not memory_bytes:
            return {"artifact": spec["artifact"], "error": f"timed out after {exc.timeout:.0f} s", "fits": None}
        return _does_not_fit(spec, f"stalled under the memory cap for {exc.timeout:.0f} s", memory_bytes)
    finally:
        os.unlink(fh.name)
    result = _parse(proc.stdout, spec["artifact"], proc.stderr, proc.returncode)
    if memory_bytes:
        peak = result.get("peak_rss_bytes") or 0
        if result.get("error") or result.get("fits") is False:
            return _does_not_fit(spec, result.get("error") or "allocation failed", memory_bytes)
        result["fits"] = peak <= memory_bytes
        if not result["fits"]:
            result["fit_note"] = f"peak RSS {peak / 2**20:,.1f} MiB exceeds the budget {memory_bytes / 2**20:,.1f} MiB"
    return result


def _artifact_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _does_not_fit(spec: dict[str, Any], why: str, budget: int) -> dict[str, Any]:
    return {
        "artifact": spec["artifact"],
        "fits": False,
        "error": f"does not fit in {budget / 2**20:,.1f} MiB: {why}",
    }


@dataclass(frozen=True)
class Remote:
    """A real device reached over SSH, with edgekit installed in ``python`` there."""

    host: str  # user@address, as ssh takes it
    port: int = 22
    identity: str | None = None  # private key file
    remote_dir: str = "/tmp/edgekit-bench"
    python: str = "python3"
    extra_ssh: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_remote(self.host, self.port, self.identity, self.python)

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        return run_ssh(
            spec,
            self.host,
            port=self.port,
            identity=self.identity,
            remote_dir=self.remote_dir,
            python=self.python,
            extra_ssh=self.extra_ssh,
        )


# user@host, host, or user@[ipv6]: letters, digits and . _ - % @ : [ ] only, never a leading '-'
_HOST = re.compile(r"^(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?(?:[A-Za-z0-9_][A-Za-z0-9._%-]*|\[[0-9A-Fa-f:.%]+\])$")


def check_remote(host: str, port: int, identity: str | None, python: str) -> None:
    """Refuse values ssh could read as options (``-oProxyCommand=...``) or that are not what they claim.

    ``run_ssh`` also ends ssh's options with ``--`` before the host, so this is the second wall.
    """
    if not isinstance(host, str) or not _HOST.match(host):
        raise InputError("--ssh", f"{host!r} is not user@host (letters, digits, '.', '-', '_'; no leading '-')")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InputError("--ssh-port", f"{port!r} is not a port number (1-65535)")
    if identity is not None and (identity.startswith("-") or not Path(identity).is_file()):
        raise InputError("--ssh-key", f"{identity!r} is not a key file")
    if not python or python.startswith("-") or any(c.isspace() or ord(c) < 32 for c in python):
        raise InputError("--remote-python", f"{python!r} is not a program name or path")


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
    """Push the artifact to ``host``, run the child there (edgekit installed remotely), pull the JSON back.

    Only ``ssh`` is needed on this side and ``tar`` on both (no scp/sftp subsystem). ssh hands the
    remote side one command string, so every remote argument is quoted; nothing the user typed is
    ever interpreted by a shell.
    """
    check_remote(host, port, identity, python)
    # "--" ends ssh's options: whatever the host string holds, ssh reads it as the destination
    ssh = ["ssh", "-p", str(port), "-o", "BatchMode=yes", *(["-i", identity] if identity else []), *(extra_ssh or [])]
    ssh.append("--")

    def remote(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess:
        command = " ".join(shlex.quote(a) for a in argv)
        return subprocess.run([*ssh, host, command], capture_output=True, **kwargs)

    artifact = Path(spec["artifact"])
    try:
        remote("mkdir", "-p", "--", remote_dir, check=True, timeout=60)
        with subprocess.Popen(
            ["tar", "-C", str(artifact.parent), "-cf", "-", "--", artifact.name], stdout=subprocess.PIPE
        ) as tar:
            copy = subprocess.run(
                [*ssh, host, " ".join(shlex.quote(a) for a in ("tar", "-C", remote_dir, "-xf", "-"))],
                stdin=tar.stdout,
                capture_output=True,
                timeout=timeout,
            )
        if copy.returncode or tar.returncode:
            raise subprocess.CalledProcessError(copy.returncode or tar.returncode, "tar | ssh", stderr=copy.stderr)
        remote_spec = {**spec, "artifact": f"{remote_dir}/{artifact.name}"}
        spec_path = f"{remote_dir}/spec.json"
        remote("sh", "-c", 'cat > "$0"', spec_path, input=json.dumps(remote_spec).encode(), check=True, timeout=60)
        proc = remote(python, "-m", "edgekit.bench.child", spec_path, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
        return {"artifact": spec["artifact"], "host": host, "error": f"ssh {host}: {detail[0]}", "fits": None}
    except subprocess.TimeoutExpired as exc:
        return {"artifact": spec["artifact"], "host": host, "error": f"ssh {host}: timed out after {exc.timeout:.0f} s"}
    result = _parse(
        proc.stdout.decode(errors="replace"), remote_spec["artifact"], proc.stderr.decode(), proc.returncode
    )
    return {**result, "artifact": spec["artifact"], "host": host}
