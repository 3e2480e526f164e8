"""Surgery: removing structures whose weights were zeroed changes nothing; shapes, counts and GQA hold."""

from __future__ import annotations

import pytest
import torch

from edgekit.models import count_parameters, tiny_model
from edgekit.plan import count_params
from edgekit.prune import PrunePlan, apply_keep, planned_config, prune_model
from edgekit.prune.surgery import Keep, keep_everything

ATOL = 2e-5  # fp32: only the summation order of shorter matmuls differs (measured ~4e-6 on logits ~O(1))


def _ids(n: int = 2, seq: int = 24, vocab: int = 512, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _small(arch: str = "llama", **kw):
    return tiny_model(arch=arch, hidden_size=128, intermediate_size=192, num_heads=8, num_kv_heads=2, **kw)


def _zero_query_heads(model, heads: list[int]) -> None:
    """Make the given query heads contribute nothing: zero their columns of o_proj in every layer."""
    hd = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer in model.model.layers:
            for h in heads:
                layer.self_attn.o_proj.weight[:, h * hd : (h + 1) * hd] = 0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_removing_zeroed_kv_group_leaves_logits_unchanged_when_fp32(arch):
    model = _small(arch)
    _zero_query_heads(model, [4, 5, 6, 7])  # KV group 1 (4 query heads per group)
    ids = _ids()
    ref = _logits(model, ids)
    keep = keep_everything(model)
    keep.groups = [torch.tensor([0])] * 2
    pruned = apply_keep(model, keep)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (4, 1)
    torch.testing.assert_close(_logits(pruned, ids), ref, rtol=0, atol=ATOL)
    # the removal is not a no-op: with the group's weights intact the outputs would differ
    assert not torch.allclose(_logits(apply_keep(_small(arch), keep), ids), _logits(_small(arch), ids), atol=1e-3)


def test_removing_zeroed_query_heads_within_groups_leaves_logits_unchanged_when_fp32():
    model = _small()
    _zero_query_heads(model, [1, 2, 5, 6])  # two heads in each of the two groups
    ids = _ids()
    ref = _logits(model, ids)
    keep = keep_everything(model)
    keep.heads = [torch.tensor([[0, 3], [0, 3]])] * 2
    pruned = apply_keep(model, keep)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (4, 2)
    torch.testing.assert_close(_logits(pruned, ids), ref, rtol=0, atol=ATOL)


def test_removing_zeroed_ffn_channels_leaves_logits_unchanged_when_fp32():
    model = _small("mistral")
    dropped = torch.arange(0, 192, 3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[:, dropped] = 0
    ids = _ids()
    ref = _logits(model, ids)
    kept = torch.tensor([i for i in range(192) if i % 3])
    keep = keep_everything(model)
    keep.ffn = [kept] * 2
    pruned = apply_keep(model, keep)
    assert pruned.config.intermediate_size == 128
    torch.testing.assert_close(_logits(pruned, ids), ref, rtol=0, atol=ATOL)


def test_removing_zeroed_layer_leaves_logits_unchanged_when_fp32():
    model = _small(num_layers=3)
    with torch.no_grad():  # layer 1 adds nothing to the residual stream: it is the identity
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    ids = _ids()
    ref = _logits(model, ids)
    keep = keep_everything(model)
    keep.layers, keep.ffn, keep.groups = [0, 2], keep.ffn[:2], keep.groups[:2]
    pruned = apply_keep(model, keep)
    torch.testing.assert_close(_logits(pruned, ids), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("tied", [False, True])
def test_removing_zeroed_hidden_channels_leaves_logits_unchanged_when_norms_rescaled(tied):
    model = _small(tie_word_embeddings=tied)
    dropped = torch.arange(0, 128, 4)  # 32 residual channels that never carry anything
    with torch.no_grad():
        model.model.embed_tokens.weight[:, dropped] = 0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[dropped] = 0
            layer.mlp.down_proj.weight[dropped] = 0
    ids = _ids()
    ref = _logits(model, ids)
    keep = keep_everything(model)
    keep.hidden = torch.tensor([i for i in range(128) if i % 4])
    pruned = apply_keep(model, keep)
    assert pruned.config.hidden_size == 96 and pruned.config.head_dim == 16
    assert pruned.config.tie_word_embeddings == tied
    if tied:
        assert pruned.lm_head.weight.data_ptr() == pruned.model.embed_tokens.weight.data_ptr()
    assert pruned.lm_head.weight.shape == (512, 96)
    torch.testing.assert_close(_logits(pruned, ids), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [False, True])
def test_parameter_count_equals_prediction_when_every_structure_pruned(arch, tied):
    model = tiny_model(arch=arch, num_layers=3, num_heads=8, num_kv_heads=4, tie_word_embeddings=tied)
    plan = PrunePlan(ffn=0.5, heads=0.5, query_heads=0.5, layers=1, hidden=0.25)
    calib = _ids(4, 16)
    pruned, report = prune_model(model, plan, calib, criterion="activation", check_gguf=False)
    predicted = planned_config(model.config, plan)
    assert count_parameters(pruned) == count_params(predicted) == count_params(pruned.config)
    assert report["parameters_after"] == count_parameters(pruned) < report["parameters_before"]
    c = pruned.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (2, 192, 256)
    assert (c.num_key_value_heads, c.num_attention_heads) == (2, 2)


@pytest.mark.parametrize(
    "plan",
    [PrunePlan(heads=0.5), PrunePlan(query_heads=0.5), PrunePlan(heads=0.5, query_heads=0.5), PrunePlan(hidden=0.5)],
)
def test_gqa_heads_stay_multiple_of_kv_heads_and_head_dim_kept_when_heads_pruned(plan):
    model = tiny_model(num_heads=8, num_kv_heads=4)
    pruned, _ = prune_model(model, plan, _ids(2, 16), criterion="magnitude")
    c = pruned.config
    assert c.num_attention_heads % c.num_key_value_heads == 0
    assert c.head_dim == 32
    attn = pruned.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (c.num_attention_heads * 32, c.hidden_size)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (c.num_key_value_heads * 32, c.hidden_size)
    assert attn.o_proj.weight.shape == (c.hidden_size, c.num_attention_heads * 32)
    _logits(pruned, _ids())  # runs


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_layer_indices_config_and_kv_cache_agree_when_layers_removed(arch):
    model = tiny_model(arch=arch, num_layers=4)
    pruned, report = prune_model(model, PrunePlan(layers=2), _ids(2, 16), criterion="block")
    assert pruned.config.num_hidden_layers == len(pruned.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    assert len(report["layers_kept"]) == 2
    prompt = _ids(1, 6)
    cached = pruned.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = pruned.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    with torch.no_grad():
        out = pruned(input_ids=prompt, use_cache=True)
    assert len(out.past_key_values.layers) == 2
    if getattr(pruned.config, "layer_types", None) is not None:
        assert len(pruned.config.layer_types) == 2


def test_apply_keep_raises_value_error_when_layers_keep_different_sizes():
    model = _small()
    keep = keep_everything(model)
    keep.groups = [torch.tensor([0]), torch.tensor([0, 1])]
    with pytest.raises(ValueError, match="same non-zero count"):
        apply_keep(model, keep)
    with pytest.raises(ValueError, match="distinct"):
        apply_keep(model, Keep([0, 0], keep.ffn, keep.groups, keep.hidden))


def test_apply_keep_leaves_source_model_untouched_when_pruning():
    model = _small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune_model(model, PrunePlan(ffn=0.5, hidden=0.5), _ids(2, 16))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prune_refuses_qwen2_shape_llama_cpp_cannot_load_unless_check_disabled():
    from edgekit.errors import UnsupportedModelError

    model = tiny_model(arch="qwen2", num_heads=8, num_kv_heads=4)
    with pytest.raises(UnsupportedModelError, match="heads × head_dim = 256 but hidden = 128"):
        prune_model(model, PrunePlan(hidden=0.5), _ids(2, 16))
    pruned, _ = prune_model(model, PrunePlan(hidden=0.5, heads=0.5), _ids(2, 16))
    assert pruned.config.num_attention_heads * pruned.config.head_dim == pruned.config.hidden_size == 128
    assert prune_model(model, PrunePlan(hidden=0.5), _ids(2, 16), check_gguf=False)[0].config.hidden_size == 128
