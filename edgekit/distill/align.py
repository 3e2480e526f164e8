"""Hidden-state and attention alignment: pull mapped student layers towards teacher layers (TinyBERT/MiniLM).

Logit KD only tells the student what to output; matching intermediate hidden states also tells it
how to get there, which helps most when the student starts far from the teacher. Student layer i
is matched to teacher layer ``uniform_layers(n_t, n_s)[i]`` (the same map ``derive_student`` copies
weights with), through a learned linear projection when widths differ and the identity otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.distill.student import uniform_layers

ALIGN_LOSSES = ("mse", "cosine")


class HiddenAligner(nn.Module):
    """Projections student width -> teacher width, one per student layer, and the alignment loss.

    Hidden-state tuples are HF's ``output_hidden_states``: index 0 is the embeddings, index i the
    output of layer i, each [batch, seq, d].
    """

    def __init__(self, n_student: int, n_teacher: int, d_student: int, d_teacher: int, loss: str = "mse"):
        super().__init__()
        if loss not in ALIGN_LOSSES:
            raise ValueError(f"unknown alignment loss {loss!r}; use one of {', '.join(ALIGN_LOSSES)}")
        self.loss_kind = loss
        self.mapping = uniform_layers(n_teacher, n_student)
        self.proj = nn.ModuleList(
            nn.Identity() if d_student == d_teacher else nn.Linear(d_student, d_teacher, bias=False)
            for _ in self.mapping
        )

    @classmethod
    def for_models(cls, student, teacher, loss: str = "mse") -> HiddenAligner:
        s, t = student.config, teacher.config
        return cls(s.num_hidden_layers, t.num_hidden_layers, s.hidden_size, t.hidden_size, loss)

    def forward(
        self, student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...], mask=None
    ) -> torch.Tensor:
        """Mean over mapped layers of MSE (or 1 − cosine) per counted token; mask [batch, seq] bool."""
        losses = []
        for i, (t_idx, proj) in enumerate(zip(self.mapping, self.proj, strict=True)):
            s = proj(student_hidden[i + 1].float())
            t = teacher_hidden[t_idx + 1].float().detach()
            mse = self.loss_kind == "mse"
            per_token = (s - t).pow(2).mean(-1) if mse else 1 - F.cosine_similarity(s, t, dim=-1)
            losses.append(per_token[mask].mean() if mask is not None else per_token.mean())
        return torch.stack(losses).mean()


def attention_transfer_loss(
    student_attn: tuple[torch.Tensor, ...], teacher_attn: tuple[torch.Tensor, ...], mask=None
) -> torch.Tensor:
    """Mean over mapped layers of KL(teacher ‖ student) between head-averaged attention rows.

    Attentions are HF's ``output_attentions`` ([batch, heads, seq, seq], rows sum to 1). Averaging
    over heads lets students with fewer heads learn where the teacher looks without a head mapping.
    ``mask`` [batch, seq] selects the query positions that count.
    """
    mapping = uniform_layers(len(teacher_attn), len(student_attn))
    losses = []
    for s_layer, t_idx in enumerate(mapping):
        s = student_attn[s_layer].float().mean(1).clamp(min=1e-12)
        t = teacher_attn[t_idx].float().detach().mean(1)
        per_row = (t * (t.clamp(min=1e-12).log() - s.log())).sum(-1)
        losses.append(per_row[mask].mean() if mask is not None else per_row.mean())
    return torch.stack(losses).mean()
