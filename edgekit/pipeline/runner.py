"""Run pipeline stages with content-addressed outputs, so re-runs skip finished work.

A stage's key hashes its name, its spec and the keys of the stages it consumes. Its output lives in
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

STAGE_FILE = "stage.json"
PIPELINE_SCHEMA = 1  # bump when a stage's output layout changes, so old outputs are not reused

# A stage body: (output folder to fill, scratch folder for checkpoints) -> JSON-able summary.
StageBody = Callable[[Path, Path], dict[str, Any]]


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

    def key(self, name: str, spec: dict[str, Any]) -> str:
        from edgekit import __version__

        return sha256_json({"stage": name, "spec": spec, "schema": PIPELINE_SCHEMA, "edgekit": __version__})[:16]

    def run(self, name: str, spec: dict[str, Any], body: StageBody) -> StageResult:
        """Run ``body`` unless an output for the same (name, spec) already exists."""
        key = self.key(name, spec)
        out = self.workdir / "stages" / f"{name}-{key}"
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
                write_json_atomic(
                    tmp / STAGE_FILE, {"stage": name, "key": key, "spec": spec, "summary": summary, "seconds": seconds}
                )
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
