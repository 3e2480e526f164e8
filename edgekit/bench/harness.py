"""Run a suite over artifacts and write the results JSON (versioned schema, docs/benchmarking.md)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from edgekit.bench.bandwidth import probe_bandwidth, roofline_tokens_per_s
from edgekit.bench.quality import measure_quality
from edgekit.bench.runners import run_local
from edgekit.bench.suites import load_suite
from edgekit.fileio import write_json_atomic
from edgekit.targets import TargetProfile

RESULTS_SCHEMA = 1


def host_info() -> dict[str, Any]:
    import psutil

    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "bandwidth_gbs": round(probe_bandwidth(), 2),
    }


def _kv_bytes(model_dir: str | Path | None, context: int) -> int:
    if model_dir is None:
        return 0
    from edgekit.models import load_config
    from edgekit.plan import kv_cache_bytes

    return kv_cache_bytes(load_config(model_dir), context)


def run_suite(
    artifacts: list[str | Path],
    suite: str | Path,
    *,
    target: TargetProfile | None = None,
    reference_model: str | Path | None = None,
    teacher_model: str | Path | None = None,
    out_dir: str | Path | None = None,
    limit_to_target: bool = False,
) -> dict[str, Any]:
    """Measure every artifact with ``suite``; quality vs the fp ``reference_model`` and ``teacher_model``.

    ``limit_to_target`` runs each child pinned to the target's thread count and capped at its memory
    budget (a mobile-class setting on this host), reporting "does not fit" instead of dying.
    """
    spec_suite = load_suite(suite)
    host = host_info()
    threads = target.runtime.threads if target else None
    context = target.budget.context_length if target else 2048
    kv = _kv_bytes(reference_model, context)
    results = []
    for artifact in artifacts:
        spec = {
            "artifact": str(artifact),
            "options": {"n_threads": min(threads or os.cpu_count(), os.cpu_count())},
            "prompt_lengths": spec_suite.prompt_lengths,
            "new_tokens": spec_suite.new_tokens,
            "repeats": spec_suite.repeats,
            "warmup": spec_suite.warmup,
        }
        limits = (
            {"cores": threads, "memory_bytes": int(target.budget.memory_mb * 2**20)}
            if (target and limit_to_target)
            else {}
        )
        r = run_local(spec, **limits)
        if not r.get("error"):
            r["kv_bytes"] = kv
            r["quality"] = measure_quality(artifact, reference_model, teacher_model, spec_suite.quality_tokens)
            bytes_per_token = r["file_size_bytes"] + kv
            r["roofline_fraction"] = r["decode_tokens_per_s"]["median"] / roofline_tokens_per_s(
                host["bandwidth_gbs"], bytes_per_token
            )
            if target:
                r["predicted_decode_tokens_per_s"] = roofline_tokens_per_s(
                    target.hardware.memory_bandwidth_gbs, bytes_per_token
                )
        r.setdefault("fits", not r.get("error"))
        results.append(r)
    payload = {
        "schema_version": RESULTS_SCHEMA,
        "suite": spec_suite.name,
        "target": target.name if target else None,
        "model": str(reference_model) if reference_model else None,
        "host": host,
        "results": results,
    }
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "results.json", payload)
    return payload
