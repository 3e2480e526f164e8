"""Distillation losses against closed forms, finite differences and each other."""

from __future__ import annotations

import math

import pytest
import torch

from edgekit.distill.fused import fused_kd_loss
from edgekit.distill.losses import (
    IGNORE,
    chunked_soft_kl,
    combined,
    divergence_per_token,
    hard_ce,
    next_token_labels,
    soft_kl,
    topk_kl,
)

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]


def _logits(n: int = 12, vocab: int = 20, seed: int = 0, scale: float = 2.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, vocab, generator=g) * scale).to(dtype)


def _labels(n: int, vocab: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[::4] = IGNORE
    return labels


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_loss_is_zero_when_logits_are_identical(divergence, temperature):
    z = _logits()
    assert soft_kl(z, z.clone(), temperature, divergence=divergence).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_loss_is_positive_when_logits_differ():
    a, b = _logits(seed=0), _logits(seed=1)
    for divergence in DIVERGENCES:
        assert soft_kl(a, b, 2.0, divergence=divergence).item() > 1e-3


def test_forward_kl_matches_closed_form_for_two_token_vocab():
    p, q = torch.tensor([[0.8, 0.2]]), torch.tensor([[0.5, 0.5]])
    expected = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert soft_kl(q.log(), p.log()).item() == pytest.approx(expected, rel=1e-6)
    reverse = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert soft_kl(q.log(), p.log(), divergence="reverse_kl").item() == pytest.approx(reverse, rel=1e-6)


def test_jsd_tends_to_forward_kl_over_beta_when_beta_is_small():
    s, t = _logits(seed=2), _logits(seed=3)
    forward = soft_kl(s, t).item()
    beta = 1e-4
    assert soft_kl(s, t, divergence="jsd", beta=beta).item() / beta == pytest.approx(forward, rel=1e-2)
    assert soft_kl(s, t, divergence="jsd", beta=0.0).item() == pytest.approx(forward, rel=1e-6)
    reverse = soft_kl(s, t, divergence="reverse_kl").item()
    assert soft_kl(s, t, divergence="jsd", beta=1.0).item() == pytest.approx(reverse, rel=1e-6)


def test_jsd_is_bounded_by_log_two_when_beta_is_half():
    s, t = _logits(scale=30.0, seed=4), _logits(scale=30.0, seed=5)
    assert 0 < soft_kl(s, t, divergence="jsd", beta=0.5).item() <= math.log(2) + 1e-6


def test_unknown_divergence_is_refused():
    z = _logits()
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence_per_token(z, z, "tv")


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_soft_loss_gradient_matches_finite_differences_in_float64(divergence):
    s = _logits(5, 7, seed=6, dtype=torch.float64).requires_grad_(True)
    t = _logits(5, 7, seed=7, dtype=torch.float64)
    labels = torch.tensor([1, IGNORE, 3, 0, 6])
    assert torch.autograd.gradcheck(lambda x: soft_kl(x, t, 2.0, labels, divergence, 0.3), (s,))


def test_combined_and_topk_gradients_match_finite_differences_in_float64():
    s = _logits(5, 7, seed=8, dtype=torch.float64).requires_grad_(True)
    t = _logits(5, 7, seed=9, dtype=torch.float64)
    labels = torch.tensor([1, 2, IGNORE, 0, 6])
    assert torch.autograd.gradcheck(lambda x: combined(x, t, labels, 2.0, 0.3), (s,))
    lp, ids = torch.log_softmax(t, -1).topk(3)
    assert torch.autograd.gradcheck(lambda x: topk_kl(x, lp, ids, labels), (s,))


def test_fused_gradient_matches_finite_differences_in_float64():
    g = torch.Generator().manual_seed(10)
    h = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 9, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 2, IGNORE, 0, 8, 3])

    def loss(h, w):
        return fused_kd_loss(h, w, t, labels=labels, temperature=2.0, alpha=0.4, divergence="jsd", chunk=4)

    assert torch.autograd.gradcheck(loss, (h, w))


def _fused_inputs(n=70, d=16, vocab=101, seed=11):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, requires_grad=True)
    w = (torch.randn(vocab, d, generator=g) * 0.5).requires_grad_(True)
    t = torch.randn(n, vocab, generator=g) * 2
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[torch.arange(n) % 3 == 0] = IGNORE
    return h, w, t, labels


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_fused_loss_equals_naive_in_value_and_gradient_when_masked(divergence, alpha):
    h, w, t, labels = _fused_inputs()
    naive = combined(h @ w.t(), t, labels, 2.0, alpha, divergence, 0.3)
    ref = torch.autograd.grad(naive, (h, w))
    kwargs = dict(labels=labels, temperature=2.0, alpha=alpha, divergence=divergence, beta=0.3, chunk=16)
    fused = fused_kd_loss(h, w, t, **kwargs)
    got = torch.autograd.grad(fused, (h, w))
    torch.testing.assert_close(fused, naive, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_loss_stays_fp32_when_called_under_bf16_autocast():
    h, w, _, labels = _fused_inputs()
    g = torch.Generator().manual_seed(13)
    th, tw = torch.randn(len(h), 24, generator=g), torch.randn(len(w), 24, generator=g) * 0.5
    kwargs = dict(teacher_hidden=th, teacher_weight=tw, labels=labels, temperature=2.0, alpha=0.3, chunk=16)
    ref = fused_kd_loss(h, w, **kwargs)
    ref_grad = torch.autograd.grad(ref, (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's autocast, on the CPU for the test
        got = fused_kd_loss(h, w, **kwargs)
    got_grad = torch.autograd.grad(got, (h, w))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grad, ref_grad, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_loss_from_teacher_hidden_states_equals_loss_from_teacher_logits():
    h, w, _, labels = _fused_inputs()
    g = torch.Generator().manual_seed(12)
    th, tw = torch.randn(70, 8, generator=g), torch.randn(101, 8, generator=g)
    a = fused_kd_loss(h, w, th @ tw.t(), labels=labels, temperature=4.0, chunk=32)
    b = fused_kd_loss(h, w, teacher_hidden=th, teacher_weight=tw, labels=labels, temperature=4.0, chunk=7)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_soft_kl_equals_naive_in_value_and_gradient():
    h, w, t, labels = _fused_inputs()
    naive = soft_kl(h @ w.t(), t, 3.0, labels)
    ref = torch.autograd.grad(naive, (h, w))
    chunked = chunked_soft_kl(h, w, t, 3.0, chunk=9, labels=labels)
    got = torch.autograd.grad(chunked, (h, w))
    torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _grad_norm(temperature: float, scaled: bool) -> float:
    s = _logits(64, 50, seed=13, scale=1.0).requires_grad_(True)
    t = _logits(64, 50, seed=14, scale=1.0)
    loss = soft_kl(s, t, temperature)
    if not scaled:
        loss = loss / temperature**2
    (g,) = torch.autograd.grad(loss, s)
    return g.norm().item()


def test_t_squared_keeps_gradient_scale_comparable_across_temperatures():
    norms = [_grad_norm(t, scaled=True) for t in (1, 2, 4, 8)]
    assert max(norms) / min(norms) < 2.0


def test_gradient_shrinks_as_one_over_t_squared_without_the_t_squared_factor():
    norms = {t: _grad_norm(t, scaled=False) for t in (1, 2, 4, 8)}
    assert norms[8] / norms[1] < 0.05
    assert norms[4] / norms[8] == pytest.approx(4.0, rel=0.1)  # the 1/T² regime at high T


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_loss_equals_full_loss_when_k_is_vocab(temperature):
    s, t = _logits(16, 30, seed=15), _logits(16, 30, seed=16)
    labels = _labels(16, 30)
    lp, ids = torch.log_softmax(t / temperature, -1).topk(30)
    full = soft_kl(s, t, temperature, labels)
    torch.testing.assert_close(topk_kl(s, lp, ids, labels, temperature=temperature), full, rtol=1e-5, atol=1e-6)
    tail = torch.zeros(16)
    torch.testing.assert_close(topk_kl(s, lp, ids, labels, tail, temperature), full, rtol=1e-5, atol=1e-6)


def test_topk_loss_is_below_full_kl_when_k_is_small():
    # bucketing the tail is a coarsening of both distributions, so KL can only drop (data processing)
    s, t = _logits(16, 30, seed=17), _logits(16, 30, seed=18)
    lp_full = torch.log_softmax(t, -1)
    lp, ids = lp_full.topk(5)
    tail = 1 - lp.exp().sum(-1)
    approx = topk_kl(s, lp, ids, tail=tail).item()
    assert 0 < approx <= soft_kl(s, t).item() + 1e-6


def test_topk_loss_uses_stored_tail_mass_instead_of_rounded_log_probs():
    s, t = _logits(8, 30, seed=19), _logits(8, 30, seed=20)
    lp, ids = torch.log_softmax(t, -1).topk(10)
    exact_tail = 1 - lp.exp().sum(-1)
    exact = topk_kl(s, lp, ids, tail=exact_tail)
    rounded = topk_kl(s, lp.half(), ids, tail=exact_tail)
    assert rounded.item() == pytest.approx(exact.item(), rel=5e-3)


def test_hard_ce_ignores_masked_positions_and_is_zero_when_nothing_counts():
    z = _logits(6, 10, seed=21)
    labels = torch.tensor([1, IGNORE, 2, IGNORE, 3, 4])
    keep = labels != IGNORE
    expected = torch.nn.functional.cross_entropy(z[keep], labels[keep])
    torch.testing.assert_close(hard_ce(z, labels), expected)
    assert hard_ce(z, torch.full((6,), IGNORE)).item() == 0.0


def test_next_token_labels_mask_padding_and_prompt_targets():
    rows = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 11, 12, 13]])
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    labels = next_token_labels(rows, attention, prompt_lengths=torch.tensor([2, 3])).view(2, 5)
    # row 0: targets 6,7,8,<pad>; prompt covers tokens 0-1 so target 6 (index 1) is ignored
    assert labels[0].tolist() == [IGNORE, 7, 8, IGNORE, IGNORE]
    assert labels[1].tolist() == [IGNORE, IGNORE, 12, 13, IGNORE]


def test_masked_positions_do_not_change_loss_or_receive_gradient():
    s = _logits(6, 10, seed=22).requires_grad_(True)
    t = _logits(6, 10, seed=23)
    labels = torch.tensor([1, IGNORE, 2, IGNORE, 3, 4])
    for divergence in DIVERGENCES:
        loss = combined(s, t, labels, 2.0, 0.5, divergence)
        (g,) = torch.autograd.grad(loss, s)
        assert g[1].abs().max().item() == 0.0 and g[3].abs().max().item() == 0.0
        t2 = t.clone()
        t2[1] += 100.0
        assert combined(s, t2, labels, 2.0, 0.5, divergence).item() == pytest.approx(loss.item(), rel=1e-6)


def test_uniform_tail_equals_full_kl_when_the_teacher_tail_is_uniform():
    s = _logits(6, 30, seed=24)
    t = torch.full((6, 30), -1.0)
    t[:, :5] = _logits(6, 5, seed=25)  # five distinct head logits, a flat tail of 25
    lp_full = torch.log_softmax(t, -1)
    lp, ids = lp_full[:, :5], torch.arange(5).expand(6, 5)
    tail = 1 - lp.exp().sum(-1)
    got = topk_kl(s, lp, ids, tail=tail, tail_mode="uniform")
    torch.testing.assert_close(got, soft_kl(s, t), rtol=1e-5, atol=1e-6)
    assert topk_kl(s, lp, ids, tail=tail).item() < got.item()  # the bucket only sees the tail's total


def test_uniform_tail_gradient_matches_finite_differences_and_k_vocab_is_exact():
    s = _logits(5, 7, seed=26, dtype=torch.float64).requires_grad_(True)
    t = _logits(5, 7, seed=27, dtype=torch.float64)
    lp, ids = torch.log_softmax(t, -1).topk(3)
    assert torch.autograd.gradcheck(lambda x: topk_kl(x, lp, ids, tail_mode="uniform"), (s,))
    full_lp, full_ids = torch.log_softmax(t, -1).topk(7)
    exact = topk_kl(s, full_lp, full_ids, tail=torch.zeros(5, dtype=torch.float64), tail_mode="uniform")
    torch.testing.assert_close(exact, soft_kl(s, t))
