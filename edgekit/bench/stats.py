"""Summaries of repeated measurements: median and spread, never a single run."""

from __future__ import annotations

import statistics


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
