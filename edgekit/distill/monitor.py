"""Quality of a student against its teacher on a fixed held-out set.

Reported: KL(teacher ‖ student) per token, perplexity of both, top-1 agreement, and KL on rare
tokens (targets in the lowest-frequency decile of the held-out set) apart, because averages hide
what distillation loses first: the long tail.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekit.quality import kl_per_token, perplexity, top1_agreement


@torch.no_grad()
def model_logits(model, rows: torch.Tensor, batch: int = 4) -> np.ndarray:
    """Next-token logits for every position: [rows * seq, vocab] float32 numpy."""
    device = next(model.parameters()).device
    out = [model(input_ids=rows[i : i + batch].to(device)).logits.float().cpu() for i in range(0, len(rows), batch)]
    return torch.cat(out).reshape(-1, out[0].shape[-1]).numpy()


def evaluate(
    teacher_logits: np.ndarray | None, student, heldout: torch.Tensor, reference_logits: np.ndarray | None = None
) -> dict[str, float]:
    """Held-out metrics of ``student``; teacher comparisons when ``teacher_logits`` [rows*seq, vocab] given.

    ``reference_logits`` (same shape): a second teacher to compare with, the original one when
    ``teacher_logits`` are an intermediate student's (progressive distillation): adds
    ``kl_to_original`` and ``top1_to_original``.
    """
    s = model_logits(student, heldout)
    # predict token t+1 from position t: drop the last position of each row
    seq = heldout.shape[1]
    keep = np.ones(len(s), dtype=bool)
    keep[seq - 1 :: seq] = False
    targets = heldout[:, 1:].reshape(-1).numpy()
    result = {"ppl": perplexity(s[keep], targets)}
    if teacher_logits is not None:
        t = teacher_logits[keep]
        kl = kl_per_token(t, s[keep])
        rare = _rare_mask(targets)
        result.update(
            kl=float(kl.mean()),
            kl_rare=float(kl[rare].mean()),
            top1=top1_agreement(t, s[keep]),
            ppl_teacher=perplexity(t, targets),
        )
    if reference_logits is not None:
        ref = reference_logits[keep]
        result.update(
            kl_to_original=float(kl_per_token(ref, s[keep]).mean()), top1_to_original=top1_agreement(ref, s[keep])
        )
    return result


def _rare_mask(targets: np.ndarray) -> np.ndarray:
    """Positions whose target is among the least frequent tokens (lowest decile by count)."""
    ids, counts = np.unique(targets, return_counts=True)
    threshold = np.quantile(counts, 0.1)
    rare_ids = ids[counts <= threshold]
    return np.isin(targets, rare_ids)
