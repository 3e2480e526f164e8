"""Progressive distillation: a chain of single-step runs, resumable stage by stage."""

from __future__ import annotations

import pytest
import torch

import edgekit.distill.trainer as trainer_mod
from edgekit.distill import DistillConfig, derive_student, distill
from edgekit.distill.progressive import Stage, parse_via, plan_stages, progressive_distill
from edgekit.errors import ConfigError
from edgekit.models import load_model

SEQ = 24


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_and_rows(make_tiny_hf):
    teacher = load_model(make_tiny_hf("llama", num_layers=4))
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, teacher.config.vocab_size, (16, SEQ), generator=g)
    heldout = torch.randint(3, teacher.config.vocab_size, (2, SEQ), generator=g)
    return teacher, rows, heldout


def _config(**overrides) -> DistillConfig:
    base = dict(steps=4, batch_size=4, seq_len=SEQ, lr=3e-3, warmup_steps=1, checkpoint_every=2, alpha=0.2, seed=3)
    return DistillConfig(**{**base, **overrides})


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name, tensor in sa.items():
        assert torch.equal(tensor, sb[name]), name


def test_progressive_run_equals_a_chain_of_two_single_step_runs(teacher_and_rows):
    teacher, rows, heldout = teacher_and_rows
    config = _config()
    stages = [Stage(2), Stage(1)]
    result = progressive_distill(teacher, stages, rows, config, heldout_ids=heldout, progress=False)

    first = distill(teacher, derive_student(teacher, num_layers=2, seed=3), rows, config, progress=False).student
    second = distill(first, derive_student(first, num_layers=1, seed=3), rows, config, progress=False).student
    _assert_same_weights(result.student, second)
    assert result.student.config.num_hidden_layers == 1
    # the final stage is measured against its own teacher and against the original one
    final = result.stages[-1]["final"]
    assert {"kl", "top1", "kl_to_original", "top1_to_original"} <= set(final)
    assert "kl_to_original" not in result.stages[0]["final"]  # stage 1's teacher is the original


def test_resume_in_the_middle_of_a_progressive_run_ends_with_identical_weights(teacher_and_rows, tmp_path):
    teacher, rows, _ = teacher_and_rows
    config = _config(steps=4, checkpoint_every=2)
    stages = [Stage(2, 0.5), Stage(1)]  # the intermediate is also FFN-pruned (Minitron-style)
    reference = progressive_distill(teacher, stages, rows, config, workdir=tmp_path / "a", progress=False).student

    real_step = trainer_mod._step
    calls = {"n": 0}

    def crashing_step(*args, **kwargs):
        if calls["n"] == 7:  # stage 1 took 4 steps; die inside stage 2's step 4, after its checkpoint at 2
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_step(*args, **kwargs)

    trainer_mod._step = crashing_step
    try:
        with pytest.raises(KeyboardInterrupt):
            progressive_distill(teacher, stages, rows, config, workdir=tmp_path / "b", progress=False)
    finally:
        trainer_mod._step = real_step
    assert (tmp_path / "b" / "stage-1" / "stage.json").is_file()
    assert not (tmp_path / "b" / "stage-2" / "stage.json").exists()
    torch.manual_seed(999)  # a fresh process would not share the crashed run's RNG position
    counted = {"n": 0}

    def counting_step(*args, **kwargs):
        counted["n"] += 1
        return real_step(*args, **kwargs)

    trainer_mod._step = counting_step
    try:
        resumed = progressive_distill(
            teacher, stages, rows, config, workdir=tmp_path / "b", resume=True, progress=False
        ).student
    finally:
        trainer_mod._step = real_step
    assert counted["n"] == 2  # stage 1 skipped, stage 2 resumed from its step-2 checkpoint
    _assert_same_weights(reference, resumed)
    assert resumed.config.intermediate_size == reference.config.intermediate_size < teacher.config.intermediate_size


def test_via_spelling_and_stage_order():
    assert parse_via("0.5, 0.25x0.75") == [(0.5, 1.0), (0.25, 0.75)]
    assert plan_stages(16, parse_via("0.5,0.25"), Stage(2)) == [Stage(8), Stage(4), Stage(2)]
    assert plan_stages(8, parse_via("0.5x0.5"), Stage(2)) == [Stage(4, 0.5), Stage(2, 0.5)]
    with pytest.raises(ConfigError, match="--via"):
        parse_via("0.5,big,1.5")
    with pytest.raises(ConfigError, match="not smaller"):
        plan_stages(8, parse_via("0.25,0.5"), Stage(1))
    with pytest.raises(ConfigError, match="not smaller"):
        plan_stages(4, parse_via("0.5"), Stage(2))
