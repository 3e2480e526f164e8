"""Run a suite over artifacts and write the results JSON (versioned schema, docs/benchmarking.md)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from edgekit.bench.bandwidth import probe_bandwidth, probe_gpu_bandwidth, weight_bytes_per_token
from edgekit.bench.gpu import backend_options, check_gpu
from edgekit.bench.quality import measure_quality
from edgekit.bench.runners import Remote, run_local
from edgekit.bench.schema import RESULTS_SCHEMA
from edgekit.bench.stats import pool_rounds
from edgekit.bench.suites import load_suite
from edgekit.fileio import write_json_atomic
from edgekit.plan import roofline_tokens_per_s
from edgekit.targets import TargetProfile


def host_info(gpu: bool = False) -> dict[str, Any]:
    """This machine: CPU count, memory, measured copy bandwidth (and the GPU's when ``gpu``)."""
    import psutil

    info = {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "bandwidth_gbs": round(probe_bandwidth(), 2),
    }
    if gpu:
        gpu_bw = probe_gpu_bandwidth()
        info["gpu_bandwidth_gbs"] = round(gpu_bw, 1) if gpu_bw else None
    return info


def _kv_bytes(model_dir: str | Path | None, context: int, artifact: str | Path | None = None) -> int:
    """KV-cache bytes at ``context`` tokens: from ``model_dir``'s config, else the artifact's own metadata.

    The artifact (GGUF metadata, ONNX genai_config) states its layers, KV heads and head size, so a
    bench without ``--model`` predicts the same speed as ``plan`` and the build (0 only when neither says).
    """
    from edgekit.plan import kv_cache_bytes

    if model_dir is not None:
        from edgekit.models import load_config

        return kv_cache_bytes(load_config(model_dir), context)
    if artifact is not None:
        from edgekit.predict import kv_bytes_for_artifact

        return kv_bytes_for_artifact(artifact, context) or 0
    return 0


def _decode_context(r: dict[str, Any]) -> int:
    """Mean number of tokens in the cache while the benchmark decoded: the prompt plus half the output."""
    first_prompt = next(iter(r["prompt_tokens"].values()))
    return int(first_prompt + r["decode_tokens"] / 2)


def _roofline(
    r: dict[str, Any], host: dict[str, Any], model_dir, target: TargetProfile | None, gpu: bool, remote: bool
) -> None:
    """Add bytes read per token, the measured fraction of the roofline and the target prediction.

    The roofline is that of the memory the decode ran from: this host's measured CPU copy bandwidth,
    the GPU's when offloaded, or the target's nominal bandwidth for a run on the device over SSH.
    """
    weights = weight_bytes_per_token(r["artifact"])
    kv_measured = _kv_bytes(model_dir, _decode_context(r), r["artifact"])
    if remote:
        bandwidth = host.get("remote_bandwidth_gbs")
    else:
        bandwidth = host.get("gpu_bandwidth_gbs") if gpu else host["bandwidth_gbs"]
    r["weight_bytes_per_token"] = weights
    r["kv_bytes_measured"] = kv_measured
    r["roofline_fraction"] = (
        r["decode_tokens_per_s"]["median"] / roofline_tokens_per_s(bandwidth, weights + kv_measured)
        if bandwidth
        else None
    )
    if target:
        add_target_prediction(r, target, _kv_bytes(model_dir, target.budget.context_length, r["artifact"]))


def add_target_prediction(r: dict[str, Any], target: TargetProfile, kv_bytes: int) -> None:
    """The calibrated decode (and prefill) prediction on ``target`` at its full context, into result ``r``."""
    from edgekit import predict

    r["kv_bytes"] = kv_bytes
    speed = predict.decode(target, r["weight_bytes_per_token"], kv_bytes, predict.artifact_format(r["artifact"]))
    r["predicted_decode_tokens_per_s"] = speed.tokens_per_s
    r["predicted_decode_low"], r["predicted_decode_high"] = speed.low, speed.high
    r["predicted_basis"], r["predicted_note"] = speed.basis, speed.note
    pre = predict.prefill(target, r.get("parameters") or 0)
    r["predicted_prefill_tokens_per_s"] = pre.tokens_per_s if pre else None


def run_suite(
    artifacts: list[str | Path],
    suite: str | Path,
    *,
    target: TargetProfile | None = None,
    reference_model: str | Path | None = None,
    teacher_model: str | Path | None = None,
    out_dir: str | Path | None = None,
    limit_to_target: bool = False,
    gpu: bool = False,
    remote: Remote | None = None,
) -> dict[str, Any]:
    """Measure every artifact with ``suite``; quality vs the fp ``reference_model`` and ``teacher_model``.

    ``limit_to_target`` runs each child pinned to the target's thread count and capped at its memory
    budget (a mobile-class setting on this host), reporting "does not fit" instead of dying.
    ``gpu`` offloads to CUDA (all llama.cpp layers, ONNX Runtime's CUDA provider) and records GPU
    memory; it fails at once with ``BackendUnavailable`` where no CUDA backend is installed.
    ``remote`` measures on a real device over SSH instead (quality is still computed here: it does
    not depend on the device); its roofline fraction uses the target's nominal bandwidth.
    """
    spec_suite = load_suite(suite, target)
    if gpu and not remote:  # a device over SSH has its own CUDA, or says so in its result
        check_gpu(artifacts)
    host = host_info(gpu and not remote)
    cpus = os.cpu_count() or 1
    if remote:  # the device's own thread count; this host's cores say nothing about it
        threads = target.runtime.threads if target else None
    else:
        threads = min(target.runtime.threads, cpus) if target else cpus
    limits = (
        {"cores": target.runtime.threads, "memory_bytes": int(target.budget.memory_mb * 2**20)}
        if (target and limit_to_target and not remote)
        else {}
    )
    if remote:
        host["remote_bandwidth_gbs"] = target.hardware.memory_bandwidth_gbs if target else None
    specs = [
        {
            "artifact": str(artifact),
            "options": backend_options(artifact, threads, gpu),
            "prompt_lengths": spec_suite.prompt_lengths,
            "new_tokens": spec_suite.new_tokens,
            "repeats": spec_suite.repeats,
            "warmup": spec_suite.warmup,
            "gpu": gpu,
        }
        for artifact in artifacts
    ]
    rounds: list[list[dict[str, Any]]] = [[] for _ in specs]
    for _ in range(spec_suite.rounds):  # interleaved: a slow spell of the machine hits every artifact alike
        for spec, done in zip(specs, rounds, strict=True):
            if done and done[-1].get("error"):
                continue  # it failed (or did not fit) once; it will again
            done.append(remote.run(spec) if remote else run_local(spec, **limits))
    results = []
    for artifact, done in zip(artifacts, rounds, strict=True):
        r = pool_rounds(done)
        if not r.get("error"):
            _roofline(r, host, reference_model, target, gpu, remote is not None)
            r["quality"] = measure_quality(artifact, reference_model, teacher_model, spec_suite.quality_tokens)
        r.setdefault("fits", not r.get("error"))
        results.append(r)
    payload = {
        "schema_version": RESULTS_SCHEMA,
        "suite": spec_suite.name,
        "suite_settings": spec_suite.model_dump(exclude={"name", "description"}),
        "target": target.name if target else None,
        "target_budget": target.budget.model_dump() if target else None,
        "limited_to_target": bool(limits),
        "gpu": gpu,
        "remote_host": remote.host if remote else None,
        "model": str(reference_model) if reference_model else None,
        "teacher": str(teacher_model) if teacher_model else None,
        "host": host,
        "results": results,
    }
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "results.json", payload)
    return payload


DEFAULT_LADDER = ["Q4_K_M", "Q8_0"]  # for a target that exports no GGUF ladder of its own


def export_ladder(model: str | Path, target: TargetProfile, out_dir: str | Path, progress: bool = True) -> list[Path]:
    """The target's GGUF ladder exported from the HF folder ``model`` (quant-sweep's first step).

    K-quants get an importance matrix from the built-in corpus, as ``edgekit export`` does.
    """
    from edgekit.export.gguf import export_gguf

    levels = target.ladder("gguf") or DEFAULT_LADDER
    return export_gguf(model, Path(out_dir), levels, imatrix="auto", progress=progress)
