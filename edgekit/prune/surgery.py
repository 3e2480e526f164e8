"""Cut structures out of a Llama / Mistral / Qwen2 model and return an ordinary HF model.

Instead of editing modules in place (where stale attributes such as head counts or layer indices
break the KV cache or export), a new model is built from the shrunk config and the kept rows and
columns are copied into it. The config then describes the new shapes exactly, so ``save_pretrained``
/ ``from_pretrained`` / ``generate`` and the exporters see a normal model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass
class Keep:
    """What survives, in the original model's numbering (all index tensors sorted)."""

    layers: list[int]
    ffn: list[torch.Tensor]  # per kept layer: FFN channel indices
    groups: list[torch.Tensor]  # per kept layer: KV-group indices (query heads follow their group)
    hidden: torch.Tensor  # hidden dims


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def pruned_config(config, keep: Keep):
    """A copy of ``config`` describing the kept shapes (uniform sizes across layers)."""
    new = copy.deepcopy(config)
    group_size = config.num_attention_heads // config.num_key_value_heads
    new.head_dim = head_dim(config)
    new.num_hidden_layers = len(keep.layers)
    new.intermediate_size = len(keep.ffn[0])
    new.num_key_value_heads = len(keep.groups[0])
    new.num_attention_heads = len(keep.groups[0]) * group_size
    new.hidden_size = len(keep.hidden)
    if getattr(config, "layer_types", None):
        new.layer_types = [config.layer_types[i] for i in keep.layers]
    if getattr(config, "max_window_layers", None) is not None:
        new.max_window_layers = min(config.max_window_layers, new.num_hidden_layers)
    return new


def _head_rows(groups: torch.Tensor, per_group: int, dim: int) -> torch.Tensor:
    """Row indices of the heads in ``groups`` when each group spans ``per_group`` heads of ``dim`` rows."""
    heads = (groups[:, None] * per_group + torch.arange(per_group)).reshape(-1)
    return (heads[:, None] * dim + torch.arange(dim)).reshape(-1)


@torch.no_grad()
def apply_keep(model, keep: Keep):
    """The pruned model (float32, eval mode); ``model`` is left untouched."""
    from transformers import AutoModelForCausalLM

    config = model.config
    hd, gs = head_dim(config), config.num_attention_heads // config.num_key_value_heads
    new = AutoModelForCausalLM.from_config(pruned_config(config, keep), dtype=torch.float32)
    h = keep.hidden
    new.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[:, h])
    new.model.norm.weight.copy_(model.model.norm.weight[h])
    if not config.tie_word_embeddings:
        new.lm_head.weight.copy_(model.lm_head.weight[:, h])
    for j, (i, ffn, groups) in enumerate(zip(keep.layers, keep.ffn, keep.groups, strict=True)):
        src, dst = model.model.layers[i], new.model.layers[j]
        q_rows, kv_rows = _head_rows(groups, gs, hd), _head_rows(groups, 1, hd)
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            s, d = getattr(src.self_attn, name), getattr(dst.self_attn, name)
            d.weight.copy_(s.weight[rows][:, h])
            if s.bias is not None:
                d.bias.copy_(s.bias[rows])
        dst.self_attn.o_proj.weight.copy_(src.self_attn.o_proj.weight[h][:, q_rows])
        dst.mlp.gate_proj.weight.copy_(src.mlp.gate_proj.weight[ffn][:, h])
        dst.mlp.up_proj.weight.copy_(src.mlp.up_proj.weight[ffn][:, h])
        dst.mlp.down_proj.weight.copy_(src.mlp.down_proj.weight[h][:, ffn])
        dst.input_layernorm.weight.copy_(src.input_layernorm.weight[h])
        dst.post_attention_layernorm.weight.copy_(src.post_attention_layernorm.weight[h])
    new.generation_config = copy.deepcopy(model.generation_config)
    return new.eval()


def keep_everything(model) -> Keep:
    """The identity selection (a starting point for removing one kind of structure)."""
    c = model.config
    n = c.num_hidden_layers
    return Keep(
        layers=list(range(n)),
        ffn=[torch.arange(c.intermediate_size)] * n,
        groups=[torch.arange(c.num_key_value_heads)] * n,
        hidden=torch.arange(c.hidden_size),
    )
