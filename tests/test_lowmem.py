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


@pytest.mark.parametrize("blocks", [False, True], ids=["whole-head", "head-in-blocks"])
@pytest.mark.parametrize("arch", [*REGISTRY, "llama-tied"])
def test_resident_logits_equal_fp32(arch, blocks, bf16_dirs, one_torch_thread, monkeypatch):
    if blocks:  # the tiny head (512 x 192) is then multiplied in blocks of 21 rows, as a 1 B model's is
        monkeypatch.setattr("edgekit.lowmem.CHUNK_ELEMENTS", 4096)
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
    assert (got - want).abs().max().item() <= 1e-5  # measured: 0.0 for every family, whole or in blocks
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


def _whole_forward_imatrix(model, rows) -> dict[str, np.ndarray]:
    """The importance matrix as edgekit computed it before: fp32 model, every Linear's input over a
    whole forward pass (logits included), keyed by module name."""
    sums, counts, hooks = {}, {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):

            def hook(mod, args, name=name):
                x = args[0].float().reshape(-1, args[0].shape[-1])
                sums[name] = sums.get(name, 0) + (x * x).sum(0)
                counts[name] = counts.get(name, 0) + x.shape[0]

            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(input_ids=rows)
    for h in hooks:
        h.remove()
    return {name: (sums[name] / counts[name]).numpy() for name in sums}


@pytest.mark.parametrize("arch", [a for a, f in REGISTRY.items() if f.gguf_arch])
def test_imatrix_of_resident_model_equals_fp32(arch, bf16_dirs, one_torch_thread):
    from edgekit.export.gguf import gguf_name
    from edgekit.export.imatrix import compute_imatrix

    folder = bf16_dirs(arch, tied=True)  # every family's GGUF takes tied embeddings (Gemma's only those)
    reference = load_model(folder)
    rows = _rows(reference.config.vocab_size)
    want = _whole_forward_imatrix(reference, rows)
    got, tokens = compute_imatrix(load_resident(folder), rows, batch=len(rows))
    assert tokens == rows.numel() and len(got) == len(want)
    family, n = REGISTRY[arch], reference.config.num_hidden_layers
    for module_name, values in want.items():
        is_head = module_name == family.lm_head_path
        key = (
            "token_embd.weight"
            if is_head and not family.gguf_needs_output
            else gguf_name(f"{module_name}.weight", family, n)
        )
        np.testing.assert_allclose(got[key], values, rtol=1e-6, atol=0, err_msg=module_name)
