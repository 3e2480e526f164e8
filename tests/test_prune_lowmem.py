"""Pruning in the checkpoint's precision: bf16 in, bf16 out, the same cut as the fp32 path, no fp32 copy."""

from __future__ import annotations

import copy

import pytest
import torch

from edgekit.lowmem import fp32_compute
from edgekit.models import tiny_model
from edgekit.prune import PrunePlan, apply_keep, prune_model, score
from edgekit.prune.surgery import keep_everything


def _ids(n: int = 4, seq: int = 32, vocab: int = 512, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _pair(arch: str = "llama", **kw):
    """(bf16 model, its exact fp32 upcast): the fp32 path a bf16 checkpoint used to take.

    Parameters are bf16 as in a bf16 checkpoint; buffers (rotary frequencies) stay float32, as
    ``lowmem.load_resident`` leaves them.
    """
    fp32 = tiny_model(arch=arch, hidden_size=128, intermediate_size=256, num_heads=8, num_kv_heads=2, **kw)
    bf16 = copy.deepcopy(fp32)
    with torch.no_grad():
        for p16, p32 in zip(bf16.parameters(), fp32.parameters(), strict=True):
            p16.data = p16.data.to(torch.bfloat16)
            p32.copy_(p16.float())
    return bf16, fp32


def _fp32_logits(model, ids):
    with torch.no_grad(), fp32_compute(model):
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("tied", [False, True])
def test_identity_prune_of_bf16_model_leaves_logits_unchanged_and_dtype_bf16(tied, one_torch_thread):
    bf16, _ = _pair(tie_word_embeddings=tied)
    ids = _ids()
    same = apply_keep(bf16, keep_everything(bf16))
    assert {p.dtype for p in same.parameters()} == {torch.bfloat16}
    assert torch.equal(_fp32_logits(same, ids), _fp32_logits(bf16, ids))
    for (name, a), b in zip(bf16.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("criterion", ["activation", "magnitude", "block"])
def test_scores_of_bf16_model_equal_the_fp32_models(criterion, one_torch_thread):
    bf16, fp32 = _pair()
    ids = _ids()
    a, b = score(bf16, ids, criterion), score(fp32, ids, criterion)
    for field in ("ffn", "groups", "hidden", "layers", "heads"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-5, atol=1e-6, msg=field)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}  # left in its own precision


@pytest.mark.parametrize("arch", ["llama", "gemma2", "qwen3"])
def test_real_prune_of_bf16_model_gives_fp32_paths_weights_rounded_bitwise(arch, one_torch_thread):
    bf16, fp32 = _pair(arch)
    plan = PrunePlan(ffn=0.25, heads=0.5, hidden=0.25, layers=1)
    ids = _ids()
    small16, report16 = prune_model(bf16, plan, ids, check_gguf=False)
    small32, report32 = prune_model(fp32, plan, ids, check_gguf=False)
    assert report16["layers_kept"] == report32["layers_kept"]
    assert {p.dtype for p in small16.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in small32.parameters()} == {torch.float32}
    for (name, a), b in zip(small16.state_dict().items(), small32.state_dict().values(), strict=True):
        assert torch.equal(a, b.to(torch.bfloat16)), name


def test_release_source_frees_the_source_and_gives_the_same_model(one_torch_thread):
    bf16, _ = _pair()
    keep = keep_everything(bf16)
    expected = apply_keep(bf16, keep).state_dict()
    got = apply_keep(bf16, keep, release_source=True).state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert sum(p.numel() for p in bf16.parameters()) == 0


def test_apply_keep_can_cut_to_float32_for_training(one_torch_thread):
    bf16, _ = _pair()
    out = apply_keep(bf16, keep_everything(bf16), dtype=torch.float32)
    assert {p.dtype for p in out.parameters()} == {torch.float32}


def test_taylor_on_bf16_model_restores_its_weights_exactly(one_torch_thread):
    bf16, _ = _pair()
    before = {k: v.clone() for k, v in bf16.state_dict().items()}
    score(bf16, _ids(), "taylor")
    after = bf16.state_dict()
    assert all(after[k].dtype == torch.bfloat16 and torch.equal(after[k], v) for k, v in before.items())


def test_prune_folder_saves_bf16_checkpoint_as_bf16(tmp_path, bpe_tokenizer, one_torch_thread):
    from safetensors import safe_open

    from edgekit.prune.job import prune_folder

    model = tiny_model(vocab_size=len(bpe_tokenizer)).to(torch.bfloat16)
    source = tmp_path / "src"
    model.save_pretrained(source, safe_serialization=True)
    bpe_tokenizer.save_pretrained(source)
    prune_folder(source, tmp_path / "out", PrunePlan(ffn=0.5), calibration_sequences=2, check_gguf=False)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert dtypes == {"BF16"}


def test_recovery_from_bf16_checkpoint_trains_and_saves_float32(tmp_path, bpe_tokenizer, one_torch_thread):
    from safetensors import safe_open

    from edgekit.prune.job import prune_folder

    model = tiny_model(vocab_size=len(bpe_tokenizer)).to(torch.bfloat16)
    source = tmp_path / "src"
    model.save_pretrained(source, safe_serialization=True)
    bpe_tokenizer.save_pretrained(source)
    report = prune_folder(
        source, tmp_path / "out", PrunePlan(ffn=0.5), calibration_sequences=2, recover_steps=1, check_gguf=False
    )
    assert report["recover_steps"] == 1
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert dtypes == {"F32"}  # trained weights are no longer bf16 values
