"""Quality metrics between two sets of next-token logits: the one definition every stage uses.

Verification (artifact vs PyTorch), the distillation monitor (student vs teacher) and the benchmark
harness all compare distributions with these functions, so their numbers mean the same thing.
Inputs are logits of shape [tokens, vocab]; computation is in float64 for stable small values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64. [tokens, vocab] -> [tokens, vocab]."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_per_token(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(reference ‖ candidate) in nats for each token. [tokens, vocab] x2 -> [tokens]."""
    ref_lp, cand_lp = log_softmax(reference), log_softmax(candidate)
    return (np.exp(ref_lp) * (ref_lp - cand_lp)).sum(axis=-1).clip(min=0.0)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of tokens whose argmax is the same in both. [tokens, vocab] x2 -> [0, 1]."""
    return float((np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)).mean())


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean negative log-likelihood) of ``targets`` [tokens] under ``logits`` [tokens, vocab]."""
    lp = log_softmax(logits)
    nll = -lp[np.arange(len(targets)), np.asarray(targets)]
    return float(np.exp(nll.mean()))


@dataclass(frozen=True)
class Comparison:
    """How a candidate's predictions differ from a reference's on the same tokens."""

    tokens: int
    mean_kl: float  # nats per token, KL(reference ‖ candidate)
    max_kl: float  # nats, the worst single token
    top1: float  # fraction of tokens with the same argmax
    max_abs_logit_diff: float  # largest |Δlogit| anywhere
    ppl_reference: float
    ppl_candidate: float

    @property
    def ppl_change(self) -> float:
        """Relative perplexity change of the candidate against the reference (0.02 = +2%)."""
        return self.ppl_candidate / self.ppl_reference - 1.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "ppl_change": self.ppl_change}


def compare_logits(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray) -> Comparison:
    """Compare candidate logits with reference logits; ``targets`` are the next tokens [tokens]."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    kl = kl_per_token(reference, candidate)
    return Comparison(
        tokens=int(reference.shape[0]),
        mean_kl=float(kl.mean()),
        max_kl=float(kl.max()),
        top1=top1_agreement(reference, candidate),
        max_abs_logit_diff=float(np.abs(reference - candidate).max()),
        ppl_reference=perplexity(reference, targets),
        ppl_candidate=perplexity(candidate, targets),
    )


def compare_logits_chunked(chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Comparison:
    """``compare_logits`` over (reference, candidate, targets) chunks, holding one chunk at a time.

    For a 128k-token vocabulary a thousand tokens of logits are 0.5 GB in float32 and four times
    that once converted to float64 and log-softmaxed; chunks (e.g. one row of a few hundred tokens)
    keep that to a fraction. Sums are float64, so the result equals ``compare_logits`` on the
    concatenated arrays up to summation order (relative 1e-12).
    """
    tokens, kl_sum, kl_max, agree, max_diff = 0, 0.0, 0.0, 0, 0.0
    nll_ref = nll_cand = 0.0
    for reference, candidate, targets in chunks:
        reference = np.asarray(reference, dtype=np.float64)
        candidate = np.asarray(candidate, dtype=np.float64)
        if reference.shape != candidate.shape:
            raise ValueError(f"logit shapes differ: reference {reference.shape}, candidate {candidate.shape}")
        ref_lp, cand_lp = log_softmax(reference), log_softmax(candidate)
        kl = (np.exp(ref_lp) * (ref_lp - cand_lp)).sum(axis=-1).clip(min=0.0)
        picked = np.arange(len(targets)), np.asarray(targets)
        tokens += int(reference.shape[0])
        kl_sum, kl_max = kl_sum + float(kl.sum()), max(kl_max, float(kl.max()))
        agree += int((np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)).sum())
        max_diff = max(max_diff, float(np.abs(reference - candidate).max()))
        nll_ref -= float(ref_lp[picked].sum())
        nll_cand -= float(cand_lp[picked].sum())
    if not tokens:
        raise ValueError("no tokens to compare")
    return Comparison(
        tokens=tokens,
        mean_kl=kl_sum / tokens,
        max_kl=kl_max,
        top1=agree / tokens,
        max_abs_logit_diff=max_diff,
        ppl_reference=float(np.exp(nll_ref / tokens)),
        ppl_candidate=float(np.exp(nll_cand / tokens)),
    )
