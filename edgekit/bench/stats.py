"""Summaries of repeated measurements: median and spread, never a single run."""

from __future__ import annotations

import statistics
from typing import Any


def summarize(values: list[float]) -> dict[str, float]:
    """median, p10, p90, min, max and n of repeated measurements."""
    v = sorted(values)
    if not v:
        return {
            "median": float("nan"),
            "p10": float("nan"),
            "p90": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "n": 0,
        }

    def pct(q: float) -> float:
        pos = q * (len(v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return {"median": statistics.median(v), "p10": pct(0.1), "p90": pct(0.9), "min": v[0], "max": v[-1], "n": len(v)}


def pool_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One artifact's child results from several fresh processes, as one result.

    Summaries are recomputed over every kept run of every round (so the spread includes the
    process-to-process variation), memory is the largest any round saw, and it fits only if every
    round fit. A failed round makes the whole result that failure.
    """
    failed = [r for r in rounds if r.get("error")]
    if failed:
        return failed[0]
    pooled = dict(rounds[-1])
    runs = [r["runs"] for r in rounds]
    for key in ("load_time_s", "ttft_s", "decode_tokens_per_s"):
        pooled[key] = summarize([v for run in runs for v in run[key]])
    pooled["prefill_tokens_per_s"] = {
        length: summarize([v for run in runs for v in run["prefill_tokens_per_s"][length]])
        for length in runs[0]["prefill_tokens_per_s"]
    }
    produced = [v for run in runs for v in run["decode_tokens"]]
    pooled["decode_tokens"] = int(statistics.median(produced)) if produced else 0
    pooled["runs"] = {key: [run[key] for run in runs] for key in runs[0]}  # one list per round
    for key in ("peak_rss_bytes", "os_max_rss_bytes", "gpu_memory_bytes"):
        if pooled.get(key) is not None:
            pooled[key] = max(r[key] for r in rounds)
    if "fits" in pooled:
        pooled["fits"] = all(r.get("fits", True) for r in rounds)
        notes = [r["fit_note"] for r in rounds if r.get("fit_note")]
        if notes:
            pooled["fit_note"] = notes[-1]
    pooled["rounds"] = len(rounds)
    return pooled
