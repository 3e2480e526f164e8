"""Run pipeline stages with content-addressed outputs, so re-runs skip finished work.

A stage's key hashes its name, its spec, the keys of the stages it consumes, the code that runs it
and the versions of the tools it calls (``fingerprint``), so an upgrade of edgekit or of llama.cpp,
onnxruntime, torch or transformers reruns what it affects. Its output lives in
``<workdir>/stages/<name>-<key>/`` and appears there only once complete (written under a temporary
name, then renamed), with ``stage.json`` recording the summary and timing; what a killed run left
under the temporary name is deleted when the stage runs again. A stage may keep
checkpoints in its scratch folder; with ``resume`` they survive an interruption and the stage
continues from them, otherwise they are cleared.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, StageError
from edgekit.fileio import atomic_path, read_json, remove_stale_temporaries, sha256_json, write_json_atomic
from edgekit.pipeline.fingerprint import stage_fingerprint

STAGE_FILE = "stage.json"
PIPELINE_SCHEMA = 2  # bump when a stage's output layout changes, so old outputs are not reused

# A stage body: (output folder to fill, scratch folder for checkpoints) -> JSON-able summary.
StageBody = Callable[[Path, Path], dict[str, Any]]


class WouldRun(Exception):
    """Raised by a dry-run runner at the first stage that has no finished output for its key."""

    def __init__(self, name: str, key: str, identity: dict[str, Any]):
        super().__init__(name)
        self.name, self.key, self.identity = name, key, identity


@dataclass
class StageResult:
    name: str
    key: str
    path: Path  # the finished output folder
    summary: dict[str, Any]
    seconds: float
    skipped: bool


@dataclass
class StageRunner:
    workdir: Path
    resume: bool = False
    on_stage: Callable[[str, str], None] | None = None  # (stage name, "run"|"skip") for progress display
    results: list[StageResult] = field(default_factory=list)
    fingerprint: Callable[[str], dict[str, Any]] = stage_fingerprint  # {"code": ..., "tools": ...} of a stage
    dry_run: bool = False  # only decide (see ``decide``); ``run`` raises WouldRun instead of running

    def identity(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Everything the key covers, as recorded in stage.json (so ``--explain`` can say what changed)."""
        from edgekit import __version__

        fp = self.fingerprint(name)
        return {"stage": name, "spec": spec, "schema": PIPELINE_SCHEMA, "edgekit": __version__, **fp}

    def key(self, name: str, spec: dict[str, Any]) -> str:
        return sha256_json(self.identity(name, spec))[:16]

    def output(self, name: str, key: str) -> Path:
        return self.workdir / "stages" / f"{name}-{key}"

    def run(self, name: str, spec: dict[str, Any], body: StageBody) -> StageResult:
        """Run ``body`` unless an output for the same (name, spec, code, tools) already exists."""
        identity = self.identity(name, spec)
        key = sha256_json(identity)[:16]
        out = self.output(name, key)
        if self.dry_run and not (out / STAGE_FILE).is_file():
            raise WouldRun(name, key, identity)
        if (out / STAGE_FILE).is_file():
            record = read_json(out / STAGE_FILE)
            result = StageResult(name, key, out, record["summary"], record["seconds"], skipped=True)
            self._notify(name, "skip")
            self.results.append(result)
            return result
        scratch = self.workdir / "scratch" / f"{name}-{key}"
        if scratch.exists() and not self.resume:
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # a half-written output from a killed run of this same stage
        self._notify(name, "run")
        started = time.perf_counter()
        try:
            with atomic_path(out) as tmp:
                tmp.mkdir()
                summary = body(tmp, scratch)
                seconds = round(time.perf_counter() - started, 2)
                record = {**identity, "key": key, "summary": summary, "seconds": seconds}
                write_json_atomic(tmp / STAGE_FILE, record)
        except EdgekitError:
            raise
        except Exception as exc:
            raise StageError(name, f"{type(exc).__name__}: {exc}") from exc
        shutil.rmtree(scratch, ignore_errors=True)
        result = StageResult(name, key, out, summary, seconds, skipped=False)
        self.results.append(result)
        return result

    def _notify(self, name: str, what: str) -> None:
        if self.on_stage is not None:
            self.on_stage(name, what)
