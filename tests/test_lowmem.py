"""The bf16-resident, fp32-computing model (edgekit.lowmem) equals the fp32 model, for every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.arch import REGISTRY
from edgekit.lowmem import GradientsNotSupported, fp32_compute, load_resident, release
from edgekit.models import TinySpec, load_model, tiny_model


@pytest.fixture(scope="module")
def bf16_dirs(tmp_path_factory):
    """{arch: folder} of tiny random models saved in bf16. Hidden 192: sqrt(192) is not a bf16
    number, so a bf16-rounded embedding scale (Gemma) would show."""
    cache = {}

    def build(arch: str, tied: bool = False):
        if (arch, tied) not in cache:
            spec = TinySpec(arch=arch, hidden_size=192, intermediate_size=384, tie_word_embeddings=tied)
            folder = tmp_path_factory.mktemp(f"bf16-{arch}")
            tiny_model(spec).to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
            cache[arch, tied] = folder
        return cache[arch, tied]

    return build


def _rows(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", [*REGISTRY, "llama-tied"])
def test_resident_logits_equal_fp32(arch, bf16_dirs, one_torch_thread):
    folder = bf16_dirs(arch.removesuffix("-tied"), tied=arch.endswith("-tied"))
    reference = load_model(folder)  # float32, as edgekit loaded references so far
    resident = load_resident(folder)
    assert {p.dtype for p in resident.parameters()} == {torch.bfloat16}
    rows = _rows(reference.config.vocab_size)
    with torch.no_grad():
        want = reference(input_ids=rows).logits
        with fp32_compute(resident):
            got = resident(input_ids=rows).logits
    assert got.dtype == torch.float32
    assert (got - want).abs().max().item() <= 1e-5  # measured: 0.0 for every family
    # the resident weights are put back untouched, in bf16
    assert {p.dtype for p in resident.parameters()} == {torch.bfloat16}
    for (name, p), q in zip(resident.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.float(), q), name


def test_tied_weights_stay_tied_and_restored_after_error(bf16_dirs, one_torch_thread):
    model = load_resident(bf16_dirs("gemma2", tied=True))
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert head is embed
    with pytest.raises(IndexError), torch.no_grad(), fp32_compute(model):
        model(input_ids=torch.tensor([[10**6]]))  # out of range: fails inside the embedding
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_gradients_refused(bf16_dirs, one_torch_thread):
    model = load_resident(bf16_dirs("llama"))
    with pytest.raises(GradientsNotSupported), fp32_compute(model):
        model(input_ids=_rows(model.config.vocab_size))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_fp32_checkpoint_loads_in_fp32(tmp_path, one_torch_thread):
    tiny_model(TinySpec(hidden_size=192, intermediate_size=384)).save_pretrained(tmp_path, safe_serialization=True)
    model = load_resident(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_release_empties_the_model(bf16_dirs):
    model = load_resident(bf16_dirs("llama"))
    release(model)
    assert not any(True for _ in model.parameters())


@pytest.mark.parametrize("arch", [a for a, f in REGISTRY.items() if f.gguf_arch])
def test_imatrix_of_resident_model_equals_fp32(arch, bf16_dirs, one_torch_thread):
    from edgekit.export.imatrix import compute_imatrix

    folder = bf16_dirs(arch, tied=True)  # every family's GGUF takes tied embeddings (Gemma's only those)
    rows = _rows(load_model(folder).config.vocab_size)
    want, n_want = compute_imatrix(load_model(folder), rows, batch=1)
    got, n_got = compute_imatrix(load_resident(folder), rows, batch=1)
    assert n_got == n_want and got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=0, err_msg=name)
