"""Distillation losses: soft targets at temperature T (scaled by T²), hard labels, their mix.

Shapes: logits [tokens, vocab]; labels [tokens] with -100 for positions that do not count
(padding, prompt tokens). Every loss is a mean over counted tokens.

Why T²: softening by T shrinks the soft-target gradients by 1/T², so multiplying by T² keeps their
scale comparable across temperatures and with the hard-label term (Hinton et al., 2015).

Divergences between teacher p and student q (both at temperature T):
- ``forward_kl`` KL(p‖q): mean-seeking, the classic KD; the student covers all teacher modes.
- ``reverse_kl`` KL(q‖p): mode-seeking (MiniLLM); the student concentrates on what it can fit.
- ``jsd`` generalized Jensen-Shannon with mixture m = β·p + (1−β)·q:
  JSD(β) = β·KL(p‖m) + (1−β)·KL(q‖m) (GKD, Agarwal et al. 2024). It is bounded, and
  JSD(β)/β → KL(p‖q) as β → 0, JSD(β)/(1−β) → KL(q‖p) as β → 1; at exactly β = 0 / β = 1 (where
  JSD itself vanishes) we return forward / reverse KL, the limits of the normalised JSD.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def _acc(x: torch.Tensor) -> torch.Tensor:
    """Accumulation dtype: float32 for fp16/bf16/fp32 inputs, float64 kept (for gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def _mask(labels: torch.Tensor | None, n: int, device) -> torch.Tensor:
    if labels is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return labels != IGNORE


def next_token_labels(
    rows: torch.Tensor, attention_mask: torch.Tensor | None = None, prompt_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Targets for next-token losses, flattened to [batch * seq], with -100 where nothing counts.

    Position t predicts token t+1. The last position, positions whose target is padding
    (``attention_mask`` 0) and positions whose target is still inside the prompt (index <
    ``prompt_lengths[b]``) are ignored, so a loss is taken only on response tokens.
    """
    labels = torch.cat([rows[:, 1:], torch.full_like(rows[:, :1], IGNORE)], dim=1)
    if attention_mask is not None:
        target_mask = torch.cat([attention_mask[:, 1:], torch.zeros_like(attention_mask[:, :1])], dim=1)
        labels = labels.masked_fill(target_mask == 0, IGNORE)
    if prompt_lengths is not None:
        target_pos = torch.arange(1, rows.shape[1] + 1, device=rows.device).unsqueeze(0)
        labels = labels.masked_fill(target_pos < prompt_lengths.to(rows.device).unsqueeze(1), IGNORE)
    return labels.reshape(-1)


def divergence_per_token(
    s_lp: torch.Tensor, t_lp: torch.Tensor, divergence: str = "forward_kl", beta: float = 0.5
) -> torch.Tensor:
    """D(teacher, student) per row from log-probabilities [tokens, vocab] -> [tokens]."""
    if divergence == "jsd" and beta <= 0.0:
        divergence = "forward_kl"
    elif divergence == "jsd" and beta >= 1.0:
        divergence = "reverse_kl"
    if divergence == "forward_kl":
        return (t_lp.exp() * (t_lp - s_lp)).sum(-1)
    if divergence == "reverse_kl":
        return (s_lp.exp() * (s_lp - t_lp)).sum(-1)
    if divergence == "jsd":
        m = torch.logaddexp(t_lp + math.log(beta), s_lp + math.log(1.0 - beta))
        return beta * (t_lp.exp() * (t_lp - m)).sum(-1) + (1.0 - beta) * (s_lp.exp() * (s_lp - m)).sum(-1)
    raise ValueError(f"unknown divergence {divergence!r}; use one of {', '.join(DIVERGENCES)}")


def soft_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """T²·D(teacher_T, student_T) averaged over counted tokens (see the module docstring for D)."""
    mask = _mask(labels, student.shape[0], student.device)
    s = F.log_softmax(_acc(student[mask]) / temperature, dim=-1)
    t = F.log_softmax(_acc(teacher[mask]) / temperature, dim=-1)
    per_token = divergence_per_token(s, t, divergence, beta)
    if per_token.numel() == 0:
        return student.sum() * 0.0
    return per_token.mean() * temperature**2


def hard_ce(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the true next tokens (mean over counted tokens; 0 when none count)."""
    if not bool((labels != IGNORE).any()):
        return student.sum() * 0.0
    return F.cross_entropy(_acc(student), labels, ignore_index=IGNORE)


def combined(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    divergence: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """α·CE + (1−α)·T²·D. α = 1 is plain language modelling; α = 0 is pure soft-target distillation."""
    loss = alpha * hard_ce(student, labels) if alpha > 0 else student.sum() * 0.0
    if alpha < 1 and teacher is not None:
        loss = loss + (1 - alpha) * soft_kl(student, teacher, temperature, labels, divergence, beta)
    return loss


def topk_kl(
    student: torch.Tensor,
    topk_logprobs: torch.Tensor,
    topk_ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    tail: torch.Tensor | None = None,
    temperature: float = 1.0,
    tail_mode: str = "bucket",
) -> torch.Tensor:
    """T²·KL from a cached top-K teacher distribution, with the tail mass as one extra bucket.

    topk_logprobs/topk_ids: [tokens, K] teacher log-probabilities (at ``temperature``) and their ids;
    ``tail`` [tokens]: the teacher's mass outside the top K, stored exactly by the cache because
    1 − Σ exp(float16 log-probs) loses it to rounding. The tail is compared with the student's mass
    outside the same ids (the coarsest distribution both sides know), so with K = vocab this equals
    the full KL.

    ``tail_mode="uniform"`` instead spreads the teacher's tail evenly over the V − K other ids and
    takes the KL token by token: a guess about the tail's shape, but one that also constrains how
    the student distributes its own tail, which matters when the teacher is flat (a large tail).
    """
    mask = _mask(labels, student.shape[0], student.device)
    if not bool(mask.any()):
        return student.sum() * 0.0
    s = F.log_softmax(_acc(student[mask]) / temperature, dim=-1)
    t_lp, ids = topk_logprobs[mask].to(s.dtype), topk_ids[mask].long()
    s_top = s.gather(-1, ids)
    kl_top = (t_lp.exp() * (t_lp - s_top)).sum(-1)
    t_tail = tail[mask].to(s.dtype) if tail is not None else 1 - t_lp.exp().sum(-1)
    t_tail = t_tail.clamp(min=0)
    if tail_mode == "uniform":
        return (kl_top + _uniform_tail_kl(s, s_top, t_tail)).mean() * temperature**2
    if tail_mode != "bucket":
        raise ValueError(f"tail_mode must be 'bucket' or 'uniform', not {tail_mode!r}")
    # log of the student's tail mass: log(1 - Σ q_top), computed stably as log(-expm1(logsumexp))
    s_top_lse = torch.logsumexp(s_top, dim=-1).clamp(max=-1e-7)
    s_tail_log = torch.log(-torch.expm1(s_top_lse))
    kl_tail = torch.where(t_tail > 1e-9, t_tail * (torch.log(t_tail.clamp(min=1e-30)) - s_tail_log), 0.0)
    return (kl_top + kl_tail).mean() * temperature**2


def _uniform_tail_kl(s: torch.Tensor, s_top: torch.Tensor, t_tail: torch.Tensor) -> torch.Tensor:
    """Σ over non-top ids of u·(log u − log q_j), u = tail / (V − K): per row [tokens]."""
    others = s.shape[-1] - s_top.shape[-1]
    if others == 0:
        return torch.zeros_like(t_tail)
    u = t_tail / others
    sum_s_other = s.sum(-1) - s_top.sum(-1)
    return torch.where(t_tail > 1e-9, t_tail * torch.log(u.clamp(min=1e-30)) - u * sum_s_other, 0.0)


def chunked_soft_kl(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    chunk: int = 1024,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """T²·KL(teacher ‖ student) from student hidden states [tokens, d] and lm_head weight [vocab, d].

    Kept for callers of the first API; :func:`edgekit.distill.fused.fused_kd_loss` is the general form.
    """
    from edgekit.distill.fused import fused_kd_loss

    return fused_kd_loss(hidden, lm_head_weight, teacher_logits, labels=labels, temperature=temperature, chunk=chunk)
