"""Measure one artifact inside this (isolated) process: ``python -m edgekit.bench.child SPEC.json``.

Runs apart from the harness so the harness's own memory never pollutes peak RSS, a crash or an
allocation failure stays contained, and CPU affinity / memory limits apply to the model alone.
Prints one JSON object on stdout.

Spec keys: ``artifact``, ``backend`` ("auto"), ``options`` (backend keyword arguments such as
``n_threads``, ``n_gpu_layers``, ``provider``), ``prompt_lengths`` (tokens), ``new_tokens``,
``repeats``, ``warmup`` (runs discarded before the kept ``repeats``), ``gpu`` (sample GPU memory).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from typing import Any

from edgekit.bench.memory import GpuPeak, PeakMemory
from edgekit.bench.stats import summarize

PROMPT_SOURCE_DOCS = 40  # held-out documents concatenated to cut prompts of any length from


def prompt_ids(backend, length: int) -> list[int]:
    """``length`` tokens of held-out text, tokenized by the artifact's own tokenizer."""
    from edgekit.data import builtin_documents, split_documents

    _, heldout = split_documents(builtin_documents())
    ids = backend.tokenize("\n\n".join(heldout[:PROMPT_SOURCE_DOCS]))
    while len(ids) < length:
        ids = ids + ids
    return ids[:length]


def _open(spec: dict[str, Any]):
    from edgekit.runtime.detect import open_backend

    return open_backend(spec["artifact"], spec.get("backend", "auto"), **spec.get("options", {}))


def _timed(mem: PeakMemory, keep: bool):
    """Kept (timed) runs pause background RSS sampling; warm-up runs, the same work, are sampled."""
    return mem.paused() if keep else contextlib.nullcontext()


def _load(spec: dict[str, Any], mem: PeakMemory, gpu: GpuPeak | None) -> tuple[Any, list[float]]:
    """Open the artifact ``warmup + repeats`` times (closing all but the last); kept load times in s."""
    times = []
    runs = spec["warmup"] + spec["repeats"]
    if str(spec["artifact"]).endswith(".gguf"):  # the first-use safety probe is not part of the load time
        from edgekit.runtime.llamacpp_probe import probe_once

        probe_once(spec["artifact"])
    for rep in range(runs):
        keep = rep >= spec["warmup"]
        with _timed(mem, keep):
            t0 = time.perf_counter()
            backend = _open(spec)
            elapsed = time.perf_counter() - t0
        if keep:
            times.append(elapsed)
        if gpu:
            gpu.sample()
        if rep < runs - 1:
            backend.close()
    return backend, times


def _time_prefill(backend, ids: list[int]) -> float:
    """Prompt tokens/s of one forward pass over ``ids`` (the runtime's own batching)."""
    t0 = time.perf_counter()
    backend.logits(ids)
    return len(ids) / (time.perf_counter() - t0)


def _time_generate(backend, ids: list[int], new_tokens: int) -> tuple[float, float | None, int]:
    """(time to first token in s, decode tokens/s after the first token, tokens produced), greedy."""
    from edgekit.runtime.base import SamplingParams

    t0 = time.perf_counter()
    stamps = [time.perf_counter() for _ in backend.generate_ids(ids, new_tokens, SamplingParams())]
    if not stamps:
        return float("nan"), None, 0
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return stamps[0] - t0, decode, len(stamps)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load time, peak memory, TTFT, prefill and decode speed of one artifact, over warm-up + repeats."""
    gpu = GpuPeak() if spec.get("gpu") else None
    with PeakMemory() as mem:
        backend, load_times = _load(spec, mem, gpu)
        n_ctx = backend.info.n_ctx
        # a prompt plus the generated tokens must fit the loaded context; the used length is recorded
        used = {str(L): min(L, n_ctx - spec["new_tokens"] - 1) for L in spec["prompt_lengths"]}
        prompts = {key: prompt_ids(backend, n) for key, n in used.items()}
        first = prompts[str(spec["prompt_lengths"][0])]
        prefill: dict[str, list[float]] = {key: [] for key in used}
        ttft, decode, produced = [], [], []
        for rep in range(spec["warmup"] + spec["repeats"]):
            keep = rep >= spec["warmup"]
            for key, ids in prompts.items():
                with _timed(mem, keep):
                    rate = _time_prefill(backend, ids)
                if keep:
                    prefill[key].append(rate)
            with _timed(mem, keep):
                first_s, rate, count = _time_generate(backend, first, spec["new_tokens"])
            if keep:
                ttft.append(first_s)
                produced.append(count)
                if rate is not None:
                    decode.append(rate)
        if gpu:
            gpu.sample()
        info = backend.info
        backend.close()
    result = {
        "artifact": spec["artifact"],
        "backend": info.backend,
        "format": info.format,
        "quant": info.quantization,
        "file_size_bytes": info.file_size,
        "parameters": info.parameters,
        "n_ctx": n_ctx,
        "threads": spec.get("options", {}).get("n_threads"),
        "load_time_s": summarize(load_times),
        "peak_rss_bytes": mem.peak_rss_bytes,
        "os_max_rss_bytes": PeakMemory.os_max_rss_bytes(),
        "ttft_s": summarize(ttft),
        "prompt_tokens": used,
        "prefill_tokens_per_s": {k: summarize(v) for k, v in prefill.items()},
        "decode_tokens_per_s": summarize(decode),
        "decode_tokens": int(statistics.median(produced)) if produced else 0,
        "decode_tokens_requested": spec["new_tokens"],
        "runs": {  # the kept values themselves, so the harness can pool rounds of fresh processes
            "load_time_s": load_times,
            "ttft_s": ttft,
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s": decode,
            "decode_tokens": produced,
        },
    }
    if gpu:
        result["gpu_memory_bytes"] = gpu.peak_bytes if gpu.available else None
        result["gpu_memory_method"] = gpu.method
    return result


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        result = measure(spec)
    except MemoryError:
        result = {"artifact": spec["artifact"], "fits": False, "error": "MemoryError: over the memory limit"}
    except Exception as exc:  # reported to the parent, which decides what it means
        result = {"artifact": spec["artifact"], "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
