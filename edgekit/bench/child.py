"""Measure one artifact inside this (isolated) process: ``python -m edgekit.bench.child SPEC.json``.

Runs apart from the harness so the harness's own memory never pollutes peak RSS, a crash or an
allocation failure stays contained, and CPU affinity / memory limits apply to the model alone.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from edgekit.bench.memory import PeakMemory
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


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from edgekit.runtime.base import SamplingParams
    from edgekit.runtime.detect import open_backend

    with PeakMemory() as mem:
        started = time.perf_counter()
        backend = open_backend(spec["artifact"], spec.get("backend", "auto"), **spec.get("options", {}))
        load_s = time.perf_counter() - started
        n_ctx = backend.info.n_ctx
        lengths = [min(L, n_ctx - spec["new_tokens"] - 1) for L in spec["prompt_lengths"]]
        prefill: dict[str, list[float]] = {str(L): [] for L in spec["prompt_lengths"]}
        ttft, decode = [], []
        for rep in range(spec["warmup"] + spec["repeats"]):
            keep = rep >= spec["warmup"]
            for L, used in zip(spec["prompt_lengths"], lengths, strict=True):
                ids = prompt_ids(backend, used)
                t0 = time.perf_counter()
                backend.logits(ids)
                if keep:
                    prefill[str(L)].append(used / (time.perf_counter() - t0))
            ids = prompt_ids(backend, lengths[0])
            t0 = time.perf_counter()
            stamps = [time.perf_counter() for _ in backend.generate_ids(ids, spec["new_tokens"], SamplingParams())]
            if keep and stamps:
                ttft.append(stamps[0] - t0)
                if len(stamps) > 1:
                    decode.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        info = backend.info
        backend.close()
    return {
        "artifact": spec["artifact"],
        "backend": info.backend,
        "format": info.format,
        "quant": info.quantization,
        "file_size_bytes": info.file_size,
        "parameters": info.parameters,
        "n_ctx": n_ctx,
        "load_time_s": summarize([load_s]),
        "peak_rss_bytes": mem.peak_rss_bytes,
        "os_max_rss_bytes": PeakMemory.os_max_rss_bytes(),
        "ttft_s": summarize(ttft),
        "prefill_tokens_per_s": {k: summarize(v) for k, v in prefill.items()},
        "decode_tokens_per_s": summarize(decode),
        "decode_tokens": spec["new_tokens"],
    }


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
