"""The distillation loop: learning, exact resume, data order, schedules."""

from __future__ import annotations

import pytest
import torch

import edgekit.distill.trainer as trainer_mod
from edgekit.distill import DistillConfig, derive_student, distill
from edgekit.distill.trainer import batch_rows, lr_at
from edgekit.models import load_model

SEQ = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_and_rows(make_tiny_hf):
    teacher = load_model(make_tiny_hf("llama"))
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, teacher.config.vocab_size, (24, SEQ), generator=g)
    heldout = torch.randint(3, teacher.config.vocab_size, (4, SEQ), generator=g)
    return teacher, rows, heldout


def _config(**overrides) -> DistillConfig:
    base = dict(steps=6, batch_size=4, seq_len=SEQ, lr=3e-3, warmup_steps=2, checkpoint_every=2, temperature=2.0)
    return DistillConfig(**{**base, **overrides})


def _student(teacher, dropout: float = 0.0):
    student = derive_student(teacher, num_layers=1)
    for layer in student.model.layers:  # dropout draws from the global RNG, which a resume must restore
        layer.self_attn.attention_dropout = dropout
    return student


def test_distillation_lowers_kl_to_teacher_when_trained_on_soft_targets(teacher_and_rows):
    teacher, rows, heldout = teacher_and_rows
    student = _student(teacher)
    config = _config(steps=12, alpha=0.0)
    before = distill(teacher, _student(teacher), rows, _config(steps=0), heldout_ids=heldout, progress=False).final
    after = distill(teacher, student, rows, config, heldout_ids=heldout, progress=False).final
    assert after["kl"] < before["kl"] * 0.9
    assert set(after) >= {"kl", "kl_rare", "top1", "ppl", "ppl_teacher"}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_after_interruption_reproduces_uninterrupted_weights(teacher_and_rows, tmp_path, dropout):
    teacher, rows, _ = teacher_and_rows
    config = _config(steps=6, checkpoint_every=2)
    torch.manual_seed(123)
    reference = distill(teacher, _student(teacher, dropout), rows, config, workdir=tmp_path / "a", progress=False)
    reference = reference.student

    real_step = trainer_mod._step
    calls = {"n": 0}

    def crashing_step(*args, **kwargs):
        if calls["n"] == 3:  # die inside step 4, after the checkpoint at step 2 and one more finished step
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_step(*args, **kwargs)

    trainer_mod._step = crashing_step
    torch.manual_seed(123)
    try:
        with pytest.raises(KeyboardInterrupt):
            distill(teacher, _student(teacher, dropout), rows, config, workdir=tmp_path / "b", progress=False)
    finally:
        trainer_mod._step = real_step
    torch.manual_seed(999)  # a fresh process would not share the crashed run's RNG position
    student = _student(teacher, dropout)
    resumed = distill(teacher, student, rows, config, workdir=tmp_path / "b", resume=True, progress=False)
    ref_state, got_state = reference.state_dict(), resumed.student.state_dict()
    for name, tensor in ref_state.items():
        assert torch.equal(tensor, got_state[name]), name
    assert [e["step"] for e in resumed.history] == list(range(1, 7))


def test_resume_without_checkpoint_starts_from_scratch(teacher_and_rows, tmp_path):
    teacher, rows, _ = teacher_and_rows
    result = distill(teacher, _student(teacher), rows, _config(steps=2), workdir=tmp_path, resume=True, progress=False)
    assert [e["step"] for e in result.history] == [1, 2]
    assert (tmp_path / "latest" / "model.safetensors").is_file()


def test_batch_order_is_a_pure_function_of_seed_and_step():
    config = _config(batch_size=5, grad_accum=2)
    a = [batch_rows(s, m, 23, config).tolist() for s in range(6) for m in range(2)]
    b = [batch_rows(s, m, 23, config).tolist() for s in range(6) for m in range(2)]
    assert a == b
    assert all(len(x) == 5 for x in a)
    first_epoch = [i for batch in a[:4] for i in batch]
    assert len(set(first_epoch)) == 20  # no row repeats inside an epoch
    other = [batch_rows(s, 0, 23, _config(batch_size=5, grad_accum=2, seed=1)).tolist() for s in range(3)]
    assert other != a[0:6:2]


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = _config(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(99, config) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(50, config) < lr_at(20, config)


def test_gradient_accumulation_follows_the_loss_curve_of_one_big_batch(teacher_and_rows):
    teacher, rows, _ = teacher_and_rows
    big = distill(teacher, _student(teacher), rows, _config(steps=3, batch_size=4), progress=False)
    acc = distill(teacher, _student(teacher), rows, _config(steps=3, batch_size=2, grad_accum=2), progress=False)
    # Adam's first steps are ±lr on every weight, so compare losses (not bits) across summation orders
    for a, b in zip(big.history, acc.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_autocast_is_bf16_on_cuda_and_absent_on_cpu():
    import contextlib
    import warnings

    from edgekit.distill.trainer import autocast_for

    assert isinstance(autocast_for(torch.device("cpu")), contextlib.nullcontext)
    with warnings.catch_warnings():  # on a machine without CUDA torch warns that it would disable it
        warnings.simplefilter("ignore")
        ctx = autocast_for(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
def test_cuda_run_computes_in_bf16_keeps_fp32_weights_and_lowers_kl(teacher_and_rows, fused):
    teacher, rows, heldout = teacher_and_rows
    seen = []  # dtypes of a projection's output during training steps (evaluation runs in fp32)
    student = _student(teacher)
    student.model.layers[0].mlp.up_proj.register_forward_hook(lambda m, a, out: m.training and seen.append(out.dtype))
    config = _config(steps=12, alpha=0.0, device="cuda", fused=fused)
    try:
        untrained = _config(steps=0, device="cuda")
        start = distill(teacher, _student(teacher), rows, untrained, heldout_ids=heldout, progress=False)
        result = distill(teacher, student, rows, config, heldout_ids=heldout, progress=False)
    finally:
        teacher.cpu()  # the module's other tests expect it where they left it
    before = start.final
    assert set(seen) == {torch.bfloat16}  # matmuls under autocast
    assert all(p.dtype == torch.float32 for p in result.student.parameters())  # master weights stay fp32
    assert result.final["kl"] < before["kl"] * 0.9
    assert all(e["cuda_peak_mib"] > 0 and e["tokens_per_s"] > 0 for e in result.history)
