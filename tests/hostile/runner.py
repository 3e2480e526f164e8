"""Run one hostile case in a fresh process and say how edgekit took it.

Outcomes: ``clean`` (what was expected: a one-line ``error:`` and a non-zero exit, or success where
success is right), ``traceback``, ``signal`` (the process died by a signal, e.g. SIGABRT in C++),
``hang`` (past the time limit), ``silent`` (exit 0 where an error was due, or a post-condition
broken: a file changed under its final name, a temporary left behind, a notice missing), and
``other`` (failed without a traceback where it should have worked).

Run as a script to count outcomes per class, against any edgekit tree::

    python -m tests.hostile.runner --fixtures /tmp/hostile-fixtures [--edgekit-root /path/to/tree]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.hostile.cases import CASES, Case

MEMORY_LIMIT = 8 << 30  # bytes of address space per case: a 2 GiB template bomb fails instead of swapping
OUTCOMES = ("clean", "traceback", "signal", "hang", "silent", "other")

# Runs a Python snippet the way an application would: an EdgekitError is reported as the CLI does.
_WRAPPER = """
import sys
from edgekit.errors import EdgekitError
try:
    exec(compile(sys.argv[1], "<case>", "exec"), {})
except EdgekitError as exc:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print("error:", line, file=sys.stderr)
    sys.exit(getattr(exc, "exit_code", 1))
"""


@dataclass
class Outcome:
    case: Case
    kind: str
    returncode: int | None
    stderr: str
    detail: str = ""


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_case(case: Case, fixtures: Path, work: Path, pythonpath: str) -> Outcome:
    """Prepare ``work`` for ``case``, run it, classify what happened."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if case.setup is not None:
        case.setup(fixtures, work)
    fill = {"F": str(fixtures), "C": str(work)}
    watch = work / case.watch if case.watch else None
    before = _snapshot(watch) if watch else {}
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "EDGEKIT_CACHE_DIR": str(work / ".cache"),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
        "PYTHONIOENCODING": "utf-8",
    }
    if case.code is not None:
        argv = [sys.executable, "-c", _WRAPPER, case.code.format(**fill)]
    else:
        argv = [sys.executable, "-m", "edgekit", *[a.format(**fill) if isinstance(a, str) else a for a in case.argv]]
    argv = [a if isinstance(a, bytes) else os.fsencode(a) for a in argv]
    try:
        proc = subprocess.run(
            argv, input=case.stdin, capture_output=True, env=env, cwd=work, timeout=case.timeout, preexec_fn=_limit
        )
    except subprocess.TimeoutExpired as exc:
        err = (exc.stderr or b"").decode("utf-8", "replace")
        return Outcome(case, "hang", None, err[-2000:], f"no answer within {case.timeout:.0f} s")
    err = proc.stderr.decode("utf-8", "replace")
    out = proc.stdout.decode("utf-8", "replace")
    kind, detail = _classify(case, proc.returncode, out, err)
    if kind == "clean" and watch is not None and _snapshot(watch) != before:
        kind, detail = "silent", f"files under {case.watch} changed"
    if kind in ("clean", "other") and case.check is not None:  # a broken post-condition outranks the exit code
        problem = case.check(work, out, err)
        if problem:
            kind, detail = "silent", problem
    return Outcome(case, kind, proc.returncode, err[-2000:], detail)


def _classify(case: Case, code: int, out: str, err: str) -> tuple[str, str]:
    if code < 0 or code in (134, 136, 139):
        return "signal", f"exit {code}"
    if "Traceback (most recent call last)" in err:
        return "traceback", err.strip().splitlines()[-1][:200] if err.strip() else ""
    if case.expect == "ok":
        return ("clean", "") if code == 0 else ("other", f"exit {code}: {err.strip()[-200:]}")
    if code == 0:
        return "silent", "exit 0 where an error was due"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if not errors:
        return "other", f"exit {code} without an 'error:' line: {err.strip()[-200:]}"
    if case.words and not any(case.words.lower() in line.lower() for line in errors):
        return "other", f"message lacks {case.words!r}: {errors[0][:200]}"
    return "clean", errors[0][:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, required=True)
    parser.add_argument("--edgekit-root", type=Path, default=Path.cwd(), help="the edgekit tree to test")
    parser.add_argument("--only", default="", help="comma-separated case classes or names")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args()
    from tests.hostile.fixtures import build

    build(args.fixtures)
    wanted = set(filter(None, args.only.split(",")))
    counts: dict[str, Counter] = defaultdict(Counter)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        for i, case in enumerate(CASES):
            if wanted and case.klass not in wanted and case.name not in wanted:
                continue
            outcome = run_case(case, args.fixtures, Path(tmp) / f"case{i}", str(args.edgekit_root))
            counts[case.klass][outcome.kind] += 1
            rows.append({"class": case.klass, "name": case.name, "outcome": outcome.kind, "detail": outcome.detail})
            print(f"{case.klass:12} {case.name:40} {outcome.kind:9} {outcome.detail[:110]}", flush=True)
    print(f"\n{'class':12} {'cases':>5} " + " ".join(f"{k:>9}" for k in OUTCOMES))
    for klass, c in counts.items():
        print(f"{klass:12} {sum(c.values()):5} " + " ".join(f"{c[k]:9}" for k in OUTCOMES))
    total = sum(counts.values(), Counter())
    print(f"{'total':12} {sum(total.values()):5} " + " ".join(f"{total[k]:9}" for k in OUTCOMES))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
