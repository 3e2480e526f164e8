"""A STREAM-like memory-bandwidth probe, and decode speed as a fraction of the roofline.

Decode is memory-bound: each token reads every weight and the KV cache once. So the best a runtime
can do is bandwidth ÷ bytes per token, and the measured fraction of that says how close it gets.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def probe_bandwidth(mib: int = 256, threads: int | None = None, repeats: int = 5) -> float:
    """Host copy bandwidth in GB/s (bytes read + written), numpy copies split across threads."""
    threads = threads or os.cpu_count() or 1
    n = mib * 2**20 // 8
    src, dst = np.ones(n), np.empty(n)
    chunks = np.array_split(np.arange(n), threads)
    bounds = [(c[0], c[-1] + 1) for c in chunks if len(c)]

    def copy(bound):
        lo, hi = bound
        np.copyto(dst[lo:hi], src[lo:hi])

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, bounds))
            best = max(best, 2 * n * 8 / (time.perf_counter() - start) / 1e9)
    return best


def roofline_tokens_per_s(bandwidth_gbs: float, bytes_per_token: float) -> float:
    """Upper bound on decode tokens/s when every token reads ``bytes_per_token`` bytes."""
    return bandwidth_gbs * 1e9 / bytes_per_token
