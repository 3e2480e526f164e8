"""Distillation losses: soft targets at temperature T (scaled by T²), hard labels, their mix.

Shapes: logits [tokens, vocab]; labels [tokens] with -100 for positions that do not count
(padding, prompt tokens). Every loss is a mean over counted tokens.

Why T²: softening by T shrinks the soft-target gradients by 1/T², so multiplying by T² keeps their
scale comparable across temperatures and with the hard-label term (Hinton et al., 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def _mask(labels: torch.Tensor | None, n: int, device) -> torch.Tensor:
    if labels is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return labels != IGNORE


def soft_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """T²·D(teacher_T ‖ student_T) averaged over counted tokens.

    ``divergence``: "forward_kl" KL(p‖q) (mean-seeking, the classic KD), "reverse_kl" KL(q‖p)
    (mode-seeking, MiniLLM), "jsd" generalized Jensen-Shannon with mixture weight ``beta`` (GKD).
    """
    mask = _mask(labels, student.shape[0], student.device)
    s = F.log_softmax(student[mask].float() / temperature, dim=-1)
    t = F.log_softmax(teacher[mask].float() / temperature, dim=-1)
    if divergence == "forward_kl":
        per_token = (t.exp() * (t - s)).sum(-1)
    elif divergence == "reverse_kl":
        per_token = (s.exp() * (s - t)).sum(-1)
    elif divergence == "jsd":
        m = torch.logsumexp(torch.stack([t + torch.log(torch.tensor(beta)), s + torch.log(torch.tensor(1 - beta))]), 0)
        per_token = beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)
    else:
        raise ValueError(f"unknown divergence {divergence!r}; use forward_kl, reverse_kl or jsd")
    if per_token.numel() == 0:
        return student.sum() * 0.0
    return per_token.mean() * temperature**2


def hard_ce(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the true next tokens (mean over counted tokens)."""
    return F.cross_entropy(student.float(), labels, ignore_index=IGNORE)


def combined(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    divergence: str = "forward_kl",
) -> torch.Tensor:
    """α·CE + (1−α)·T²·KL. α = 1 is plain language modelling; α = 0 is pure soft-target distillation."""
    loss = alpha * hard_ce(student, labels) if alpha > 0 else student.sum() * 0.0
    if alpha < 1 and teacher is not None:
        loss = loss + (1 - alpha) * soft_kl(student, teacher, temperature, labels, divergence)
    return loss


def topk_kl(
    student: torch.Tensor, topk_logprobs: torch.Tensor, topk_ids: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """KL from a cached top-K teacher distribution, with the tail mass as one extra bucket.

    topk_logprobs/topk_ids: [tokens, K] teacher log-probabilities (T = 1) and their ids. The teacher's
    remaining mass 1 − Σ p_topk is compared with the student's mass outside the same ids, so with
    K = vocab this equals the full KL exactly.
    """
    mask = _mask(labels, student.shape[0], student.device)
    s = F.log_softmax(student[mask].float(), dim=-1)
    t_lp, ids = topk_logprobs[mask].float(), topk_ids[mask].long()
    s_top = s.gather(-1, ids)
    kl_top = (t_lp.exp() * (t_lp - s_top)).sum(-1)
    t_tail = (1 - t_lp.exp().sum(-1)).clamp(min=0)
    s_tail = (1 - s_top.exp().sum(-1)).clamp(min=1e-12)
    kl_tail = torch.where(t_tail > 1e-9, t_tail * (torch.log(t_tail.clamp(min=1e-12)) - torch.log(s_tail)), 0.0)
    return (kl_top + kl_tail).mean()


class _ChunkedKD(torch.autograd.Function):
    """Soft-target KL computed from hidden states chunk by chunk; full [tokens, vocab] logits never exist.

    The forward pass computes each chunk's logits (hidden @ weightᵀ), its loss and its gradient with
    respect to the hidden states and the weight, then frees the chunk. Backward only scales the saved
    gradients, so peak memory is one chunk of logits for student and teacher.
    """

    @staticmethod
    def forward(ctx, hidden, weight, teacher_logits, temperature: float, chunk: int):
        n = hidden.shape[0]
        grad_h = torch.zeros_like(hidden)
        grad_w = torch.zeros_like(weight)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, n, chunk):
            h = hidden[start : start + chunk]
            s_lp = F.log_softmax((h @ weight.t()).float() / temperature, dim=-1)
            t_lp = F.log_softmax(teacher_logits[start : start + chunk].float() / temperature, dim=-1)
            t_p = t_lp.exp()
            total += (t_p * (t_lp - s_lp)).sum()
            g = (s_lp.exp() - t_p) / temperature  # d KL / d student logits
            grad_h[start : start + chunk] = (g @ weight.float()).to(hidden.dtype)
            grad_w += (g.t() @ h.float()).to(weight.dtype)
            del s_lp, t_lp, t_p, g
        scale = temperature**2 / n
        ctx.save_for_backward(grad_h * scale, grad_w * scale)
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None


def chunked_soft_kl(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    chunk: int = 1024,
) -> torch.Tensor:
    """T²·KL(teacher ‖ student) from student hidden states [tokens, d] and lm_head weight [vocab, d]."""
    return _ChunkedKD.apply(hidden, lm_head_weight, teacher_logits, temperature, chunk)
