"""One distillation step with each registered family as teacher and as student, with a checkpoint
and a resume (tied and untied embeddings), parametrized over the registry."""

from __future__ import annotations

import pytest
import torch

from edgekit.arch import REGISTRY
from edgekit.distill.checkpoint import load_checkpoint, save_checkpoint
from edgekit.distill.student import derive_student
from edgekit.distill.trainer import DistillConfig, distill
from edgekit.models import tiny_model

FAMILIES = sorted(REGISTRY)
SMALL = dict(num_layers=2, hidden_size=64, intermediate_size=128, vocab_size=128, num_heads=4, num_kv_heads=2)
ROWS = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_one_step_checkpoint_and_resume(model_type, tied, tmp_path):
    teacher = tiny_model(arch=model_type, tie_word_embeddings=tied, **SMALL)
    student = derive_student(teacher, num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1)
    assert student.config.model_type == model_type
    assert student.config.tie_word_embeddings == tied
    config = DistillConfig(steps=1, batch_size=2, checkpoint_every=1, warmup_steps=0, device="cpu")
    distill(teacher, student, ROWS, config, workdir=tmp_path, progress=False)
    resumed = derive_student(teacher, num_layers=1, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1)
    opt = torch.optim.AdamW(resumed.parameters())
    step, _ = load_checkpoint(tmp_path, resumed, opt)
    assert step == 1
    for (name, a), b in zip(student.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b), name
    if tied:  # the tie survives the round trip: one tensor, not two copies
        out, inp = resumed.get_output_embeddings().weight, resumed.get_input_embeddings().weight
        assert out.data_ptr() == inp.data_ptr()


def test_tied_weights_are_stored_once(tmp_path):
    from safetensors import safe_open

    model = tiny_model(arch="llama", tie_word_embeddings=True, **SMALL)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, 3, model, opt, [])
    with safe_open(str(tmp_path / "latest" / "model.safetensors"), "pt") as fh:
        names = set(fh.keys())
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
