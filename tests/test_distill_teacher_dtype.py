"""The teacher's precision: ``auto`` keeps a bf16 checkpoint bf16 yet gives the fp32 teacher's targets exactly."""

from __future__ import annotations

import pytest
import torch

from edgekit.distill import DistillConfig, derive_student, distill
from edgekit.distill.teacher import load_teacher, teacher_compute
from edgekit.models import tiny_model

SEQ = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bf16_teacher_dir(tmp_path_factory, bpe_tokenizer):
    model = tiny_model(vocab_size=len(bpe_tokenizer), tie_word_embeddings=True).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("bf16-teacher")
    model.save_pretrained(folder, safe_serialization=True)
    bpe_tokenizer.save_pretrained(folder)
    return folder


def _rows(vocab: int, n: int = 8) -> torch.Tensor:
    return torch.randint(3, vocab, (n, SEQ), generator=torch.Generator().manual_seed(0))


def _train(teacher, dtype: str, rows) -> torch.nn.Module:
    student = derive_student(teacher, num_layers=1)
    config = DistillConfig(steps=2, batch_size=4, seq_len=SEQ, warmup_steps=1, checkpoint_every=10)
    with teacher_compute(teacher, dtype):
        return distill(teacher, student, rows, config, progress=False).student


def test_auto_keeps_bf16_checkpoint_bf16_and_float32_upcasts(bf16_teacher_dir):
    assert {p.dtype for p in load_teacher(bf16_teacher_dir, "auto").parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_teacher(bf16_teacher_dir, "float32").parameters()} == {torch.float32}


def test_auto_teacher_logits_equal_fp32_teachers_bitwise(bf16_teacher_dir):
    auto, fp32 = load_teacher(bf16_teacher_dir, "auto"), load_teacher(bf16_teacher_dir, "float32")
    rows = _rows(fp32.config.vocab_size, 2)
    with torch.no_grad(), teacher_compute(auto, "auto"):
        got = auto(input_ids=rows).logits
    with torch.no_grad():
        want = fp32(input_ids=rows).logits
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_distillation_from_auto_teacher_trains_the_same_fp32_student_as_from_fp32_teacher(bf16_teacher_dir):
    auto, fp32 = load_teacher(bf16_teacher_dir, "auto"), load_teacher(bf16_teacher_dir, "float32")
    rows = _rows(fp32.config.vocab_size)
    a, b = _train(auto, "auto", rows), _train(fp32, "float32", rows)
    assert {p.dtype for p in a.parameters()} == {torch.float32}  # the student's precision is unchanged
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert {p.dtype for p in auto.parameters()} == {torch.bfloat16}  # and the teacher stayed resident in bf16


def test_bfloat16_teacher_trains_a_float32_student(bf16_teacher_dir):
    teacher = load_teacher(bf16_teacher_dir, "bfloat16")
    student = _train(teacher, "bfloat16", _rows(teacher.config.vocab_size))
    assert {p.dtype for p in student.parameters()} == {torch.float32}


def test_unknown_teacher_dtype_is_refused():
    with pytest.raises(ValueError, match="teacher dtype"):
        load_teacher("unused", "int8")


def test_distill_command_refuses_unknown_dtype(bf16_teacher_dir, tmp_path):
    from typer.testing import CliRunner

    from edgekit.cli import _register_all, app

    if not any(c.name == "distill" for c in app.registered_commands):
        _register_all()
    result = CliRunner().invoke(app, ["distill", str(bf16_teacher_dir), "--dtype", "fp8", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert [(p.source, "fp8" in p.message) for p in result.exception.problems] == [("--dtype", True)]
