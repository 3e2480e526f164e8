"""Multi-teacher distillation: the mixture target by hand, top-K caches combined, the trainer path."""

from __future__ import annotations

import math

import pytest
import torch

from edgekit.distill import DistillConfig, derive_student, distill
from edgekit.distill.cache import build_topk_cache
from edgekit.distill.losses import soft_kl, topk_kl
from edgekit.distill.multi import (
    TeacherCaches,
    TeacherEnsemble,
    multi_teacher_kl,
    multi_topk_kl,
    token_weights,
)
from edgekit.errors import ConfigError, InputError
from edgekit.models import load_model

T = 2.0


def _softmax(xs: list[float], temp: float) -> list[float]:
    e = [math.exp(x / temp) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    v = 6
    return [torch.randn(3, v, generator=g, dtype=torch.float64) * 2 for _ in range(3)]  # student, t1, t2


@pytest.mark.parametrize("weighting", ["fixed", "confidence"])
def test_two_teacher_loss_equals_hand_computed_mixture_kl(logits, weighting):
    student, t1, t2 = logits
    w = [0.7, 0.3]
    expected = 0.0
    for row in range(3):
        p1, p2 = _softmax(t1[row].tolist(), T), _softmax(t2[row].tolist(), T)
        q = _softmax(student[row].tolist(), T)
        wi = list(w)
        if weighting == "confidence":  # w_i * top-1 probability, renormalised
            raw = [w[0] * max(p1), w[1] * max(p2)]
            wi = [r / sum(raw) for r in raw]
        mix = [wi[0] * a + wi[1] * b for a, b in zip(p1, p2, strict=True)]
        expected += _kl(mix, q) / 3
    got = multi_teacher_kl(student, [t1, t2], w, T, weighting=weighting)
    assert got.item() == pytest.approx(expected * T**2, rel=1e-10)


def test_ensemble_logits_make_the_single_teacher_loss_the_mixture_loss(logits):
    """soft_kl against T·log p̄ equals the mixture loss, so every single-teacher path can take the ensemble."""
    student, t1, t2 = logits

    class Fixed(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out, self.config = out, type("C", (), {"vocab_size": out.shape[-1]})()

        def forward(self, input_ids):
            return type("O", (), {"logits": self.out[None]})()

    ensemble = TeacherEnsemble([Fixed(t1), Fixed(t2)], [2.0, 1.0], "confidence").at(T)
    mixed = ensemble(input_ids=torch.zeros(1, 3, dtype=torch.long)).logits[0]
    assert soft_kl(student, mixed, T).item() == pytest.approx(
        multi_teacher_kl(student, [t1, t2], [2 / 3, 1 / 3], T, weighting="confidence").item(), rel=1e-10
    )


def test_forward_kl_gradient_of_mixture_equals_weighted_per_teacher_kls(logits):
    """The reason the mixture is safe as the target: same gradient as Σ w_i KL(p_i ‖ q) (fixed weights)."""
    student, t1, t2 = logits
    a = student.clone().requires_grad_(True)
    multi_teacher_kl(a, [t1, t2], [0.6, 0.4], T).backward()
    b = student.clone().requires_grad_(True)
    (0.6 * soft_kl(b, t1, T) + 0.4 * soft_kl(b, t2, T)).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def _topk(t: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    lp = torch.log_softmax(t / T, dim=-1)
    top, ids = lp.topk(k, dim=-1)
    return {"logprobs": top, "ids": ids, "tail": 1 - top.exp().sum(-1)}


def test_two_teacher_topk_loss_equals_hand_computation(logits):
    """K = 2 of 6 ids per teacher: known mass on the union, each tail spread like the student's own tail."""
    student, t1, t2 = logits
    w = [0.5, 0.5]
    targets = [_topk(t1, 2), _topk(t2, 2)]
    expected = 0.0
    for row in range(3):
        q = _softmax(student[row].tolist(), T)
        sets = [set(t["ids"][row].tolist()) for t in targets]
        union = sets[0] | sets[1]
        rest = [v for v in range(6) if v not in union]
        mix = {}
        for v in union:
            m = 0.0
            for i, t in enumerate(targets):
                ids = t["ids"][row].tolist()
                if v in ids:
                    m += w[i] * math.exp(t["logprobs"][row][ids.index(v)].item())
                else:  # teacher i's tail r_i spread over V \ S_i like the student's distribution
                    outside = sum(q[u] for u in range(6) if u not in sets[i])
                    m += w[i] * t["tail"][row].item() * q[v] / outside
            mix[v] = m
        q_rest = sum(q[u] for u in rest)
        p_rest = sum(
            w[i] * t["tail"][row].item() * q_rest / sum(q[u] for u in range(6) if u not in sets[i])
            for i, t in enumerate(targets)
        )
        assert sum(mix.values()) + p_rest == pytest.approx(1.0, abs=1e-12)
        expected += (sum(mix[v] * math.log(mix[v] / q[v]) for v in union) + p_rest * math.log(p_rest / q_rest)) / 3
    got = multi_topk_kl(student, targets, w, T)
    assert got.item() == pytest.approx(expected * T**2, rel=1e-9)


def test_topk_with_full_vocab_equals_full_mixture_and_one_teacher_equals_topk_kl(logits):
    student, t1, t2 = logits
    full = multi_topk_kl(student, [_topk(t1, 6), _topk(t2, 6)], [0.3, 0.7], T, weighting="confidence")
    assert full.item() == pytest.approx(
        multi_teacher_kl(student, [t1, t2], [0.3, 0.7], T, weighting="confidence").item(), rel=1e-9
    )
    one = _topk(t1, 3)
    single = topk_kl(student, one["logprobs"], one["ids"], None, one["tail"], T)
    assert multi_topk_kl(student, [one], [1.0], T).item() == pytest.approx(single.item(), rel=1e-9)


def test_confidence_weights_favour_the_surer_teacher():
    top1 = torch.log(torch.tensor([[0.9, 0.2], [0.3, 0.6]]))
    w = token_weights(top1, [0.5, 0.5], "confidence")
    assert torch.allclose(w.sum(0), torch.ones(2))
    assert w[0, 0] > 0.7 and w[1, 1] > 0.7


@pytest.fixture(scope="module")
def two_teachers(make_tiny_hf):
    a = load_model(make_tiny_hf("llama"))
    b = load_model(make_tiny_hf("llama", num_layers=3))
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, a.config.vocab_size, (16, 24), generator=g)
    return a, b, rows


def test_trainer_with_two_teachers_lowers_kl_to_their_mixture(two_teachers):
    a, b, rows = two_teachers
    ensemble = TeacherEnsemble([a, b], [0.5, 0.5])
    config = DistillConfig(steps=8, batch_size=4, seq_len=24, lr=3e-3, warmup_steps=1, alpha=0.0, temperature=1.0)
    before = distill(
        ensemble, derive_student(a, num_layers=1), rows, DistillConfig(steps=0), heldout_ids=rows[:4], progress=False
    )
    after = distill(ensemble, derive_student(a, num_layers=1), rows, config, heldout_ids=rows[:4], progress=False)
    assert after.final["kl"] < before.final["kl"] * 0.9


def test_cached_multi_teacher_training_equals_live_training_when_k_is_the_vocabulary(two_teachers, tmp_path):
    a, b, rows = two_teachers
    v = a.config.vocab_size
    caches = TeacherCaches([build_topk_cache(t, rows, tmp_path / str(i), k=v) for i, t in enumerate((a, b))])
    config = DistillConfig(steps=3, batch_size=4, seq_len=24, lr=3e-3, warmup_steps=1, alpha=0.0, temperature=1.0)
    live = distill(TeacherEnsemble([a, b]), derive_student(a, num_layers=1), rows, config, progress=False)
    cached = distill(None, derive_student(a, num_layers=1), rows, config, topk_cache=caches, progress=False)
    # float16 log-probs in the cache: the losses agree to a few parts in a thousand
    for x, y in zip(live.history, cached.history, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=5e-3)


def test_ensemble_refuses_fused_loss_and_mismatched_vocabularies(two_teachers, make_tiny_hf):
    a, b, rows = two_teachers
    config = DistillConfig(steps=1, batch_size=4, fused=True)
    with pytest.raises(ConfigError, match="hidden states"):
        distill(TeacherEnsemble([a, b]), derive_student(a, num_layers=1), rows, config, progress=False)
    other = load_model(make_tiny_hf("llama", tokenizer="sp"))
    other.config.vocab_size += 1
    with pytest.raises(InputError, match="--seq-kd"):
        TeacherEnsemble([a, other])
