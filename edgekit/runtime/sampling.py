"""Next-token selection shared by the backends that run their own loop (ONNX Runtime, PyTorch)."""

from __future__ import annotations

import numpy as np

from edgekit.runtime.base import SamplingParams


def make_rng(params: SamplingParams) -> np.random.Generator:
    """A generator seeded from ``params.seed`` (fresh entropy when None)."""
    return np.random.default_rng(params.seed)


def sample_next(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Pick a token id from one row of logits [vocab]: greedy at temperature 0, else top-k/top-p sampling."""
    if params.temperature <= 0:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float64) / params.temperature
    order = np.argsort(-scaled)
    if params.top_k > 0:
        order = order[: params.top_k]
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])
