"""A KD loss fused with the output projection: full [tokens, vocab] logits never exist.

At 8,192 tokens × 32,000 vocab one fp32 logits tensor is 1 GiB, and a naive KD loss holds several
(student logits, teacher logits, both log-softmaxes, probabilities, their gradient). Here the loss
takes the student's final hidden states [tokens, d] and the lm_head weight [vocab, d] (and the
teacher's the same way, or its logits), and walks the tokens in chunks: each chunk's logits are
made, reduced to a scalar and freed. Backward recomputes each chunk's logits instead of keeping
them (activation recomputation), so the peak is about one chunk of [chunk, vocab] tensors plus a
gradient buffer the size of the weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekit.distill.losses import IGNORE, divergence_per_token


def _chunk_loss(z: torch.Tensor, t_logits: torch.Tensor | None, labels: torch.Tensor, spec: tuple) -> torch.Tensor:
    """Summed α·CE + (1−α)·T²·D over the counted rows of one chunk (z: student logits [chunk, vocab])."""
    temperature, alpha, divergence, beta = spec
    total = z.new_zeros(())
    counted = labels != IGNORE
    if alpha > 0:
        total = total + alpha * F.cross_entropy(z, labels, ignore_index=IGNORE, reduction="sum")
    if alpha < 1 and t_logits is not None:
        s_lp = F.log_softmax(z[counted] / temperature, dim=-1)
        t_lp = F.log_softmax(t_logits[counted].to(z.dtype) / temperature, dim=-1)
        total = total + (1 - alpha) * temperature**2 * divergence_per_token(s_lp, t_lp, divergence, beta).sum()
    return total


def _acc(x: torch.Tensor) -> torch.Tensor:
    """float32 for low-precision inputs; float64 kept so gradients can be checked numerically."""
    return x if x.dtype == torch.float64 else x.float()


def _full_precision(x: torch.Tensor):
    """Autocast off: under the trainer's bf16 autocast the chunk matmuls would otherwise run in bf16,
    and forward (autocast on) and the recomputing backward (autocast off) would disagree."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _teacher_chunk(t_logits, t_hidden, t_weight, sl: slice) -> torch.Tensor | None:
    if t_logits is not None:
        return t_logits[sl]
    if t_hidden is not None:
        return _acc(t_hidden[sl]) @ _acc(t_weight).t()
    return None


class _FusedKD(torch.autograd.Function):
    """Forward: chunked loss under no_grad. Backward: recompute each chunk's logits, take d loss/d logits
    with a local autograd pass, and project it back onto hidden states and weight."""

    @staticmethod
    def forward(ctx, hidden, weight, t_logits, t_hidden, t_weight, labels, spec, chunk):
        n_counted = int((labels != IGNORE).sum())
        total = torch.zeros((), dtype=_acc(hidden).dtype, device=hidden.device)
        with torch.no_grad(), _full_precision(hidden):
            for start in range(0, hidden.shape[0], chunk):
                sl = slice(start, start + chunk)
                z = _acc(hidden[sl]) @ _acc(weight).t()
                total += _chunk_loss(z, _teacher_chunk(t_logits, t_hidden, t_weight, sl), labels[sl], spec)
        ctx.save_for_backward(hidden, weight, t_logits, t_hidden, t_weight, labels)
        ctx.spec, ctx.chunk, ctx.n = spec, chunk, max(n_counted, 1)
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, t_logits, t_hidden, t_weight, labels = ctx.saved_tensors
        w32 = _acc(weight)
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(w32) if ctx.needs_input_grad[1] else None
        scale = grad_out.to(w32.dtype) / ctx.n
        with _full_precision(hidden):
            for start in range(0, hidden.shape[0], ctx.chunk):
                sl = slice(start, start + ctx.chunk)
                h = _acc(hidden[sl])
                with torch.no_grad():
                    z = h @ w32.t()
                with torch.enable_grad():
                    z.requires_grad_(True)
                    loss = _chunk_loss(z, _teacher_chunk(t_logits, t_hidden, t_weight, sl), labels[sl], ctx.spec)
                    (g,) = torch.autograd.grad(loss, z)
                g = g * scale
                if grad_h is not None:
                    grad_h[sl] = (g @ w32).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += g.t() @ h
                del z, g
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None, None, None


def fused_kd_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    chunk: int = 1024,
) -> torch.Tensor:
    """Mean over counted tokens of α·CE + (1−α)·T²·D(teacher_T, student_T), logits made chunk by chunk.

    hidden [tokens, d] and weight [vocab, d] give the student logits (hidden @ weightᵀ). The teacher
    is ``teacher_logits`` [tokens, vocab] or, to avoid its full logits too, ``teacher_hidden``
    [tokens, d_t] with ``teacher_weight`` [vocab, d_t]. labels [tokens] (-100 = ignore) are needed
    when α > 0 and mask padding/prompt tokens out of both terms. Equal in value and gradient to
    :func:`edgekit.distill.losses.combined` on the full logits.
    """
    if labels is None:
        if alpha > 0:
            raise ValueError("alpha > 0 needs labels for the hard-label term")
        labels = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
    if teacher_logits is None and (teacher_hidden is None or teacher_weight is None) and alpha < 1:
        raise ValueError("give teacher_logits, or teacher_hidden with teacher_weight")
    if teacher_hidden is not None:
        teacher_hidden, teacher_weight = teacher_hidden.detach(), teacher_weight.detach()
    if teacher_logits is not None:
        teacher_logits = teacher_logits.detach()
    spec = (float(temperature), float(alpha), divergence, float(beta))
    return _FusedKD.apply(hidden, weight, teacher_logits, teacher_hidden, teacher_weight, labels, spec, chunk)
