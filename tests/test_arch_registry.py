"""The family registry: every registered family's declared shapes match what transformers builds.

Parametrized over ``edgekit.arch.REGISTRY``, so a new family gets these tests without writing any.
"""

from __future__ import annotations

import pytest
import torch

from edgekit.arch import REGISTRY, count_params, family_of, kv_cache_bytes, tensor_shapes
from edgekit.errors import UnsupportedModelError
from edgekit.models import tiny_model
from tests.published_configs import PUBLISHED, PUBLISHED_PARAMS, hf_config

FAMILIES = sorted(REGISTRY)
SMALL = dict(num_layers=4, hidden_size=64, intermediate_size=128, vocab_size=128, num_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_param_count_equals_loaded_model(model_type, tied):
    model = tiny_model(arch=model_type, tie_word_embeddings=tied, **SMALL)
    family = family_of(model.config)
    assert count_params(family, model.config) == sum(p.numel() for p in model.parameters())
    declared = tensor_shapes(family, model.config)
    for name, param in model.state_dict().items():
        assert tuple(param.shape) == declared[name], name


def test_every_family_has_a_published_config():
    assert {p["model_type"] for p in PUBLISHED.values()} >= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_count_of_published_shapes_on_meta_device(name):
    from transformers import AutoModelForCausalLM

    config = hf_config(PUBLISHED[name])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert count_params(family_of(config), config) == sum(p.numel() for p in model.parameters())
    if name in PUBLISHED_PARAMS:
        assert count_params(family_of(config), config) == PUBLISHED_PARAMS[name]


def test_kv_cache_counts_only_the_window_where_llama_cpp_does():
    config = hf_config(PUBLISHED["gemma-3-1b"])  # 5 of every 6 layers slide over 512 tokens
    family = family_of(config)
    per_token_layer = 2 * config.num_key_value_heads * config.head_dim * 2
    full = sum(t == "full_attention" for t in config.layer_types)
    expected = per_token_layer * (full * 8192 + (config.num_hidden_layers - full) * 512)
    assert kv_cache_bytes(family, config, 8192) == expected
    mistral = hf_config({**PUBLISHED["Mistral-7B-v0.3"], "sliding_window": 4096})  # llama.cpp ignores it
    assert kv_cache_bytes(family_of(mistral), mistral, 8192) == 2 * 32 * 8 * 128 * 8192 * 2


def test_unknown_family_is_refused_naming_the_supported_ones():
    from transformers import AutoConfig

    with pytest.raises(UnsupportedModelError, match=r"gpt2.*supported: llama"):
        family_of(AutoConfig.for_model("gpt2"), "teacher/")
