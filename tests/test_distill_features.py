"""Hidden-state alignment, on-policy KD, sequence-level KD and the fused loss inside the trainer."""

from __future__ import annotations

import json

import pytest
import torch

import edgekit.distill.objective as objective_mod
from edgekit.distill import DistillConfig, derive_student, distill
from edgekit.distill.align import HiddenAligner
from edgekit.distill.losses import IGNORE
from edgekit.distill.onpolicy import on_policy_batch, sample_continuations, uses_student_samples
from edgekit.distill.seqkd import generate_responses, read_pairs, sequence_rows
from edgekit.errors import ConfigError
from edgekit.models import load_model, load_tokenizer

SEQ = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(make_tiny_hf):
    return load_model(make_tiny_hf("llama"))


@pytest.fixture(scope="module")
def rows(teacher):
    g = torch.Generator().manual_seed(2)
    return torch.randint(3, teacher.config.vocab_size, (8, SEQ), generator=g)


def _hidden(n_layers: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 5, d, generator=g) for _ in range(n_layers + 1))


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_alignment_loss_is_zero_for_identical_hidden_states_with_identity_projection(loss):
    aligner = HiddenAligner(n_student=4, n_teacher=4, d_student=8, d_teacher=8, loss=loss)
    h = _hidden(4, 8, seed=0)
    assert aligner(h, h).item() == pytest.approx(0.0, abs=1e-6)
    assert aligner(h, _hidden(4, 8, seed=1)).item() > 0.1


def test_alignment_maps_student_layers_uniformly_onto_teacher_layers():
    aligner = HiddenAligner(n_student=2, n_teacher=4, d_student=8, d_teacher=8)
    assert aligner.mapping == [0, 3]
    t = _hidden(4, 8, seed=2)
    s = (t[0], t[1], t[4])  # student layer 1 = teacher layer 1, student layer 2 = teacher layer 4
    assert aligner(s, t).item() == pytest.approx(0.0, abs=1e-6)


def test_alignment_learns_a_projection_when_widths_differ():
    torch.manual_seed(0)
    aligner = HiddenAligner(n_student=1, n_teacher=1, d_student=4, d_teacher=6)
    assert aligner.proj[0].weight.shape == (6, 4)
    s = _hidden(1, 4, seed=3)
    true_map = torch.randn(6, 4)
    t = tuple(x @ true_map.t() for x in s)
    opt = torch.optim.Adam(aligner.parameters(), lr=0.05)
    first = aligner(s, t).item()
    for _ in range(300):
        opt.zero_grad()
        loss = aligner(s, t)
        loss.backward()
        opt.step()
    assert loss.item() < first * 1e-3


def test_trainer_with_alignment_trains_the_projection_and_adds_the_term(teacher, rows, tmp_path):
    student = derive_student(teacher, num_layers=1, hidden_size=128, intermediate_size=256, num_heads=2, num_kv_heads=1)
    config = DistillConfig(steps=2, batch_size=4, align="mse", align_weight=1.0, checkpoint_every=1)
    result = distill(teacher, student, rows, config, workdir=tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result.history)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "latest" / "model.safetensors")
    assert saved["aligner.proj.0.weight"].shape == (256, 128)  # checkpointed with the student


def test_on_policy_coin_is_seeded_and_hits_the_requested_fraction():
    draws = [uses_student_samples(s, 0.3, seed=0) for s in range(2000)]
    assert draws == [uses_student_samples(s, 0.3, seed=0) for s in range(2000)]
    assert 0.25 < sum(draws) / len(draws) < 0.35
    assert not any(uses_student_samples(s, 0.0, seed=0) for s in range(50))


def test_on_policy_batch_is_the_students_own_sample_with_prompt_targets_masked(teacher, rows):
    student = derive_student(teacher, num_layers=1)
    sampled, labels = on_policy_batch(student, rows[:2], prompt_len=6, seed=7)
    assert torch.equal(sampled[:, :6], rows[:2, :6])
    assert torch.equal(sampled, sample_continuations(student, rows[:2, :6], SEQ - 6, seed=7))
    assert not torch.equal(sampled[:, 6:], rows[:2, 6:])
    labels = labels.view(2, SEQ)
    assert (labels[:, :5] == IGNORE).all() and (labels[:, 5:-1] != IGNORE).all()


def test_trainer_uses_student_samples_on_on_policy_steps(teacher, rows, monkeypatch):
    seen = []
    real = objective_mod.batch_loss

    def spy(batch, *args):
        seen.append(batch)
        return real(batch, *args)

    monkeypatch.setattr("edgekit.distill.trainer.batch_loss", spy)
    student = derive_student(teacher, num_layers=1)
    config = DistillConfig(steps=2, batch_size=2, on_policy=1.0, on_policy_prompt=4, alpha=0.5)
    distill(teacher, student, rows, config, progress=False)
    assert len(seen) == 2 and all(b.on_policy for b in seen)
    for b in seen:
        assert torch.equal(b.rows[:, :4], rows[b.idx, :4])
        assert not torch.equal(b.rows[:, 4:], rows[b.idx, 4:])


def test_on_policy_and_alignment_without_a_teacher_are_refused(teacher, rows, tmp_path):
    from edgekit.distill.cache import build_topk_cache

    cache = build_topk_cache(teacher, rows, tmp_path, k=4)
    student = derive_student(teacher, num_layers=1)
    with pytest.raises(ConfigError) as err:
        distill(None, student, None, DistillConfig(steps=1, on_policy=0.5, align="mse"), topk_cache=cache)
    assert len(err.value.problems) == 2


def test_fused_trainer_loss_equals_unfused_loss(teacher, rows):
    losses = {}
    for fused in (False, True):
        config = DistillConfig(steps=2, batch_size=4, alpha=0.3, fused=fused, chunk=20, divergence="jsd")
        result = distill(teacher, derive_student(teacher, num_layers=1), rows, config, progress=False)
        losses[fused] = [e["loss"] for e in result.history]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_sequence_kd_writes_jsonl_resumes_and_masks_prompts(make_tiny_hf, tmp_path):
    folder = make_tiny_hf("llama")
    teacher, tok = load_model(folder), load_tokenizer(folder)
    prompts = ["the model", "a function that", "import the", "return value"]
    out = tmp_path / "seq.jsonl"
    generate_responses(teacher, tok, prompts[:2], out, max_new_tokens=5, batch=2)
    generate_responses(teacher, tok, prompts, out, max_new_tokens=5, batch=2)  # resumes after line 2
    pairs = read_pairs(out)
    assert [p for p, _ in pairs] == prompts
    assert all(r for _, r in pairs)
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["prompt"] == "the model"
    rows, lengths = sequence_rows(tok, pairs, seq_len=24)
    assert rows.shape == (4, 24) and (lengths > 0).all()
    student = derive_student(teacher, num_layers=1)
    config = DistillConfig(steps=3, batch_size=2, alpha=1.0)
    result = distill(None, student, rows, config, prompt_lengths=lengths, progress=False)
    assert len(result.history) == 3 and result.history[-1]["loss"] < result.history[0]["loss"]


def test_attention_transfer_is_zero_for_identical_maps_and_positive_otherwise():
    from edgekit.distill.align import attention_transfer_loss

    g = torch.Generator().manual_seed(4)
    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))

    def maps(heads: int) -> torch.Tensor:
        scores = torch.randn(2, heads, 5, 5, generator=g).masked_fill(~causal, float("-inf"))
        return torch.softmax(scores, -1)

    t = (maps(4), maps(4))
    assert attention_transfer_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    s = (maps(2),)  # one student layer with fewer heads maps onto the last teacher layer
    assert attention_transfer_loss(s, t).item() > 0.01
    assert attention_transfer_loss((t[1],), t).item() == pytest.approx(0.0, abs=1e-6)


def test_trainer_with_attention_transfer_moves_student_attention_towards_teacher(teacher, rows):
    from edgekit.distill.align import attention_transfer_loss

    student = derive_student(teacher, num_layers=1, init="random", seed=3)
    config = DistillConfig(steps=8, batch_size=4, alpha=1.0, align_attention=1.0, lr=3e-3, warmup_steps=1)

    def gap(model) -> float:
        with torch.no_grad():
            s = model(input_ids=rows[:4], output_attentions=True).attentions
            t = teacher(input_ids=rows[:4], output_attentions=True).attentions
        return attention_transfer_loss(s, t).item()

    student.set_attn_implementation("eager")
    teacher.set_attn_implementation("eager")
    before = gap(student)
    distill(teacher, student, rows, config, progress=False)
    assert gap(student) < before * 0.9
