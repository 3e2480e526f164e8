"""A STREAM-like memory-bandwidth probe, and decode speed as a fraction of the roofline.

Decode is memory-bound: each token reads every weight and the KV cache once. So the best a runtime
can do is bandwidth ÷ bytes per token, and the measured fraction of that says how close it gets.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def probe_bandwidth(mib: int = 256, threads: int | None = None, repeats: int = 5) -> float:
    """Host copy bandwidth in GB/s (bytes read + written): numpy copies split across threads, best run.

    Without ``threads``, tries 1, 2, 4, ... up to the CPU count and keeps the best: on a shared
    machine all threads can do worse than one, and the roofline wants what the memory can deliver.
    """
    if threads is None:
        cpus = os.cpu_count() or 1
        counts = sorted({min(2**i, cpus) for i in range(cpus.bit_length() + 1)})
        return max(probe_bandwidth(mib, n, repeats) for n in counts)
    n = mib * 2**20 // 8
    src, dst = np.ones(n), np.empty(n)
    bounds = [(c[0], c[-1] + 1) for c in np.array_split(np.arange(n), threads) if len(c)]

    def copy(bound):
        lo, hi = bound
        np.copyto(dst[lo:hi], src[lo:hi])  # numpy releases the GIL for the copy

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, bounds))
            best = max(best, 2 * n * 8 / (time.perf_counter() - start) / 1e9)
    return best


def weight_bytes_per_token(path: str | Path) -> int:
    """Bytes of weights one decode step reads from ``path``.

    GGUF: the tensor data, less the token-embedding table when a separate output matrix exists (a
    lookup reads one row of it, not the table; with tied embeddings the table is the output matrix
    and is read whole). Metadata and the tokenizer vocabulary are not read per token. Other formats:
    the file size, an overestimate by the embedding table.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        sizes = {t.name: int(t.n_bytes) for t in GGUFReader(path).tensors}
        if "output.weight" in sizes:
            sizes.pop("token_embd.weight", None)
        return sum(sizes.values())
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*.onnx*") if p.is_file())
    return path.stat().st_size


def probe_gpu_bandwidth(mib: int = 1024, repeats: int = 5) -> float | None:
    """CUDA device copy bandwidth in GB/s (bytes read + written), or None without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = mib * 2**20 // 4
    src = torch.ones(n, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: first touch, kernel load
    best = 0.0
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = max(best, 2 * n * 4 / (time.perf_counter() - start) / 1e9)
    return best
