"""The per-batch training objective: which loss a micro-batch gets, from which teacher signal.

Kept apart from the loop (trainer.py) so each source of teacher signal reads on its own: live
teacher logits (optionally fused with the lm_head), a top-K cache, hidden-state alignment, and
on-policy student samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from edgekit.distill.align import attention_transfer_loss
from edgekit.distill.fused import fused_kd_loss
from edgekit.distill.losses import IGNORE, combined, hard_ce, topk_kl


@dataclass
class Batch:
    """One micro-batch: token rows [b, seq], flat labels [b*seq] (-100 = ignore), cache row indices."""

    rows: torch.Tensor
    labels: torch.Tensor
    idx: torch.Tensor
    on_policy: bool = False


def batch_loss(batch: Batch, student, teacher, aligner, cache, config: Any) -> torch.Tensor:
    """α·CE + (1−α)·T²·D (+ alignment) for one micro-batch; on-policy batches use D alone."""
    alpha = 0.0 if batch.on_policy else config.alpha
    if cache is not None:
        return _cache_loss(batch, student, cache, alpha, config)
    if config.fused and aligner is None and config.align_attention == 0:
        return _fused_loss(batch, student, teacher, alpha, config)
    need_hidden = aligner is not None
    need_attn = config.align_attention > 0 and teacher is not None
    s_out = student(input_ids=batch.rows, output_hidden_states=need_hidden, output_attentions=need_attn)
    s_logits = s_out.logits.reshape(batch.labels.numel(), -1)
    t_out = None
    if teacher is not None and (alpha < 1 or need_hidden or need_attn):
        with torch.no_grad():
            t_out = teacher(input_ids=batch.rows, output_hidden_states=need_hidden, output_attentions=need_attn)
    t_logits = t_out.logits.reshape(batch.labels.numel(), -1) if t_out is not None else None
    loss = combined(s_logits, t_logits, batch.labels, config.temperature, alpha, config.divergence, config.beta)
    mask = (batch.labels != IGNORE).view(batch.rows.shape)
    if aligner is not None and t_out is not None:
        loss = loss + config.align_weight * aligner(s_out.hidden_states, t_out.hidden_states, mask)
    if need_attn:
        loss = loss + config.align_attention * attention_transfer_loss(s_out.attentions, t_out.attentions, mask)
    return loss


def _cache_loss(batch: Batch, student, cache, alpha: float, config: Any) -> torch.Tensor:
    """KD against the cached top-K teacher distribution (the teacher itself is never loaded)."""
    s_logits = student(input_ids=batch.rows).logits.reshape(batch.labels.numel(), -1)
    device = s_logits.device
    loss = alpha * hard_ce(s_logits, batch.labels) if alpha > 0 else s_logits.sum() * 0.0
    if alpha < 1 and hasattr(cache, "kd_loss"):  # several teachers' caches (multi.TeacherCaches)
        loss = loss + (1 - alpha) * cache.kd_loss(s_logits, batch.idx, batch.labels)
    elif alpha < 1:
        target = cache.batch(batch.idx.cpu())
        k = target["ids"].shape[-1]
        loss = loss + (1 - alpha) * topk_kl(
            s_logits,
            target["logprobs"].reshape(-1, k).to(device),
            target["ids"].reshape(-1, k).to(device),
            batch.labels,
            target["tail"].reshape(-1).to(device),
            cache.temperature,
            config.cache_tail,
        )
    return loss


def _fused_loss(batch: Batch, student, teacher, alpha: float, config: Any) -> torch.Tensor:
    """The fused hidden-state loss: neither the student's nor the teacher's full logits are built."""
    h = student.get_decoder()(input_ids=batch.rows).last_hidden_state
    kwargs: dict[str, Any] = {}
    if teacher is not None and alpha < 1:
        with torch.no_grad():
            th = teacher.get_decoder()(input_ids=batch.rows).last_hidden_state
        kwargs = {
            "teacher_hidden": th.reshape(-1, th.shape[-1]),
            "teacher_weight": teacher.get_output_embeddings().weight,
        }
    elif alpha < 1:
        alpha = 1.0
    return fused_kd_loss(
        h.reshape(-1, h.shape[-1]),
        student.get_output_embeddings().weight,
        labels=batch.labels,
        temperature=config.temperature,
        alpha=alpha,
        divergence=config.divergence,
        beta=config.beta,
        chunk=config.chunk,
        **kwargs,
    )
