"""Students derived from the teacher: which layers they keep and that they start from its weights."""

from __future__ import annotations

import pytest
import torch

from edgekit.distill import derive_student
from edgekit.distill.student import uniform_layers
from edgekit.models import tiny_model


@pytest.mark.parametrize(
    ("n_teacher", "n_student", "kept"), [(4, 2, [0, 3]), (6, 3, [0, 2, 5]), (4, 1, [3]), (4, 4, [0, 1, 2, 3])]
)
def test_uniform_layers_spread_evenly_keeping_first_and_last(n_teacher, n_student, kept):
    assert uniform_layers(n_teacher, n_student) == kept


def test_derived_student_copies_kept_teacher_layers_sliced_to_the_narrower_shape():
    teacher = tiny_model(num_layers=4, hidden_size=256, intermediate_size=512, seed=0)
    student = derive_student(teacher, num_layers=2, hidden_size=128, intermediate_size=256)
    t, s = teacher.state_dict(), student.state_dict()
    assert student.config.num_hidden_layers == 2 and student.config.head_dim == teacher.config.head_dim
    assert torch.equal(s["model.layers.1.mlp.gate_proj.weight"], t["model.layers.3.mlp.gate_proj.weight"][:256, :128])
    assert torch.equal(s["model.layers.0.self_attn.o_proj.weight"], t["model.layers.0.self_attn.o_proj.weight"][:128])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"][:, :128])
    # narrower RMSNorms average over fewer channels: gains × sqrt(256 / 128), as pruning does
    assert torch.allclose(s["model.norm.weight"], t["model.norm.weight"][:128] * 2**0.5)


def test_derived_student_of_full_width_reproduces_teacher_logits_when_no_layer_dropped():
    teacher = tiny_model(num_layers=2, seed=1)
    student = derive_student(teacher, num_layers=2)
    ids = torch.tensor([[1, 7, 42, 9, 300]])
    with torch.no_grad():
        assert torch.equal(student(input_ids=ids).logits, teacher(input_ids=ids).logits)


def test_random_init_student_shares_no_weights_with_the_teacher():
    teacher = tiny_model(num_layers=2, seed=0)
    student = derive_student(teacher, num_layers=1, init="random", seed=5)
    s, t = student.state_dict(), teacher.state_dict()
    assert not torch.equal(s["model.layers.0.mlp.up_proj.weight"], t["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(ValueError, match="init must be"):
        derive_student(teacher, init="zeros")
