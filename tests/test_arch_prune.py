"""Pruning through the family spec, for every registered family (parametrized over the registry)."""

from __future__ import annotations

import pytest
import torch

from edgekit.arch import REGISTRY, count_params, family_of
from edgekit.errors import UnsupportedModelError
from edgekit.models import tiny_model
from edgekit.prune import PrunePlan, prune_model
from edgekit.prune.surgery import apply_keep, keep_everything

FAMILIES = sorted(REGISTRY)
SMALL = dict(num_layers=4, hidden_size=64, intermediate_size=128, vocab_size=128, num_heads=4, num_kv_heads=2)
IDS = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_identity_prune_leaves_logits_unchanged(model_type, tied):
    model = tiny_model(arch=model_type, tie_word_embeddings=tied, **SMALL)
    pruned = apply_keep(model, keep_everything(model))
    assert (_logits(pruned) - _logits(model)).abs().max() <= 1e-5
    assert pruned.config.tie_word_embeddings == tied
    if tied:
        assert pruned.get_output_embeddings().weight.data_ptr() == pruned.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_width_prune_of_channels_that_carry_zeros_is_exact(model_type, tied):
    """Hidden channels no tensor writes into are removed without changing the logits, tied or not.

    This is what width pruning can keep exactly (quiet channels are its approximation). It covers
    Gemma's embedding scale sqrt(hidden): the kept embedding columns are scaled to keep the input,
    and a tied lm_head's share of that scale is taken back by the final norm.
    """
    from edgekit.arch.base import HIDDEN

    model = tiny_model(arch=model_type, tie_word_embeddings=tied, **SMALL)
    family = family_of(model.config)
    gone = torch.arange(0, 64, 4)  # every 4th channel
    with torch.no_grad():
        family.embed(model).weight[:, gone] = 0  # (the tied lm_head's columns too)
        for layer in family.layers(model):
            for name, (param, _rows, axes) in family.logical_tensors(layer, model.config).items():
                if axes[0] == HIDDEN and name.split(".")[0] in ("o", "down"):  # writes into the residual
                    param[gone] = 0
    keep = keep_everything(model)
    keep.hidden = torch.tensor([i for i in range(64) if i % 4])
    pruned = apply_keep(model, keep)
    assert (_logits(pruned) - _logits(model)).abs().max() <= 1e-5
    assert pruned.config.hidden_size == 48 and pruned.config.tie_word_embeddings == tied


PLANS = {
    "heads": PrunePlan(heads=0.5, hidden=0.5, round_to=1),  # hidden too: some loaders need heads×hd = hidden
    "query_heads": PrunePlan(query_heads=0.5, round_to=1),
    "ffn": PrunePlan(ffn=0.5, round_to=1),
    "layers": PrunePlan(layers=2, round_to=1),
    "hidden": PrunePlan(hidden=0.25, round_to=1),
}


@pytest.mark.parametrize("what", sorted(PLANS))
@pytest.mark.parametrize("model_type", FAMILIES)
def test_real_prune_gives_a_working_smaller_model(model_type, what):
    model = tiny_model(arch=model_type, **SMALL)
    pruned, _ = prune_model(model, PLANS[what], IDS, check_gguf=False)
    family = family_of(pruned.config)
    assert count_params(family, pruned.config) == sum(p.numel() for p in pruned.parameters())
    assert count_params(family, pruned.config) < count_params(family, model.config)
    logits = _logits(pruned)
    assert torch.isfinite(logits).all() and logits.shape == (2, 24, 128)
    if what == "layers":  # per-layer lists follow the kept layers
        for key in family.per_layer_lists:
            if getattr(model.config, key, None):
                assert len(getattr(pruned.config, key)) == 2


def test_surgery_refuses_unregistered_families():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        apply_keep(model, keep_everything(model))


def test_layer_prune_that_breaks_llama_cpps_nope_pattern_is_refused():
    from edgekit.prune.compat import gguf_problems
    from edgekit.prune.surgery import pruned_config

    model = tiny_model(arch="smollm3", **{**SMALL, "num_layers": 8})  # NoPE at layers 3 and 7
    keep = keep_everything(model)
    for drop, refused in ((3, True), (7, False)):  # dropping 3 shifts the pattern; dropping 7 keeps it
        kept = [i for i in range(8) if i != drop]
        keep.layers, keep.ffn, keep.groups = kept, keep.ffn[:7], keep.groups[:7]
        assert bool(gguf_problems(pruned_config(model.config, keep))) == refused


def test_surgery_notices_a_spec_that_misses_a_tensor(monkeypatch):
    """The NaN fill catches an incomplete family spec (here Gemma 3 without its feed-forward norms)."""
    import dataclasses

    from edgekit.arch import REGISTRY as registry

    model = tiny_model(arch="gemma3_text", **SMALL)
    broken = dataclasses.replace(registry["gemma3_text"], layer_norms=("input_layernorm", "post_attention_layernorm"))
    monkeypatch.setitem(registry, "gemma3_text", broken)
    with pytest.raises(UnsupportedModelError, match=r"unwritten.*feedforward_layernorm"):
        apply_keep(model, keep_everything(model))
