"""The held-out monitor (rare-token KL apart from the mean) and what the progress bar shows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgekit.distill.monitor import _rare_mask, evaluate
from edgekit.distill.trainer import progress_text


class _FixedLogits(torch.nn.Module):
    """A 'student' that returns the same logits whatever the input: lets a test place every difference."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.logits[: len(input_ids)])


def _heldout() -> torch.Tensor:
    """One row whose 20 targets are token 0 ×10, 1 ×5, 2 ×4 and 3 ×1: token 3 is the rare decile."""
    targets = [0] * 10 + [1] * 5 + [2] * 4 + [3]
    order = np.random.default_rng(0).permutation(20)
    return torch.tensor([[4, *[targets[i] for i in order]]])


def test_rare_mask_selects_positions_whose_target_is_in_the_lowest_frequency_decile():
    targets = _heldout()[0, 1:].numpy()
    assert np.array_equal(_rare_mask(targets), targets == 3)


def test_rare_token_kl_is_the_kl_at_rare_targets_only_when_they_alone_differ():
    heldout = _heldout()
    vocab, seq = 5, heldout.shape[1]
    teacher = torch.randn(1, seq, vocab, generator=torch.Generator().manual_seed(1))
    student = teacher.clone()
    at = int((heldout[0, 1:] == 3).nonzero()[0])  # position t predicts target t + 1
    student[0, at] = -3 * teacher[0, at]  # far from the teacher, and another argmax
    metrics = evaluate(teacher.reshape(seq, vocab).numpy(), _FixedLogits(student), heldout)
    assert metrics["kl_rare"] > 0.1
    assert metrics["kl"] == pytest.approx(metrics["kl_rare"] / 20, rel=1e-5)  # one of 20 positions differs
    assert metrics["top1"] < 1.0 and metrics["ppl"] != pytest.approx(metrics["ppl_teacher"])


def test_progress_text_shows_loss_throughput_and_latest_heldout_kl():
    entry = {"step": 7, "loss": 1.23456, "tokens_per_s": 1536.4}
    assert progress_text(entry, None) == "loss 1.235  1536 tok/s"
    assert progress_text(entry, 0.0421) == "loss 1.235  1536 tok/s  held-out KL 0.042"
