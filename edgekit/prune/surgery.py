"""Cut structures out of a Llama / Mistral / Qwen2 model and return an ordinary HF model.

Instead of editing modules in place (where stale attributes such as head counts or layer indices
break the KV cache or export), a new model is built from the shrunk config and the kept rows and
columns are copied into it. The config then describes the new shapes exactly, so ``save_pretrained``
/ ``from_pretrained`` / ``generate`` and the exporters see a normal model.

Hidden-width pruning changes what RMSNorm averages over (d_new channels instead of d_old). The norm
weights are scaled by sqrt(d_old / d_new) and ``rms_norm_eps`` by d_old / d_new, which makes removing
channels that carry zeros exact, and is the right correction when removed channels are quiet.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch


@dataclass
class Keep:
    """What survives, in the original model's numbering (all index tensors sorted).

    Every kept layer keeps the same number of FFN channels, KV groups and query heads per group,
    because HF configs describe one size for all layers.
    """

    layers: list[int]
    ffn: list[torch.Tensor]  # per kept layer: FFN channel indices
    groups: list[torch.Tensor]  # per kept layer: KV-group indices (query heads follow their group)
    hidden: torch.Tensor  # hidden dims
    heads: list[torch.Tensor] | None = None  # per kept layer: [kept groups, q per group] in-group positions


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def group_size(config) -> int:
    """Query heads per KV group."""
    return config.num_attention_heads // config.num_key_value_heads


def check_keep(config, keep: Keep) -> None:
    """Raise ValueError naming the problem if ``keep`` cannot describe a uniform HF model."""
    n = config.num_hidden_layers
    if not keep.layers or len(set(keep.layers)) != len(keep.layers) or not all(0 <= i < n for i in keep.layers):
        raise ValueError(f"kept layers {keep.layers} must be distinct indices in [0, {n})")
    per_layer = {"ffn": keep.ffn, "groups": keep.groups, **({"heads": keep.heads} if keep.heads else {})}
    limits = {"ffn": config.intermediate_size, "groups": config.num_key_value_heads, "heads": group_size(config)}
    for name, items in per_layer.items():
        if len(items) != len(keep.layers):
            raise ValueError(f"{name}: {len(items)} entries for {len(keep.layers)} kept layers")
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) != 1 or 0 in next(iter(shapes)):
            raise ValueError(f"{name}: every layer must keep the same non-zero count, got shapes {sorted(shapes)}")
        if any(int(t.min()) < 0 or int(t.max()) >= limits[name] for t in items):
            raise ValueError(f"{name}: indices must lie in [0, {limits[name]})")
    if keep.heads and keep.heads[0].shape[0] != len(keep.groups[0]):
        raise ValueError("heads: one row of in-group positions per kept KV group")
    if len(keep.hidden) == 0 or int(keep.hidden.max()) >= config.hidden_size:
        raise ValueError(f"hidden: indices must be a non-empty subset of [0, {config.hidden_size})")


def pruned_config(config, keep: Keep):
    """A copy of ``config`` describing the kept shapes (uniform sizes across layers)."""
    new = copy.deepcopy(config)
    per_group = keep.heads[0].shape[1] if keep.heads else group_size(config)
    new.head_dim = head_dim(config)
    new.num_hidden_layers = len(keep.layers)
    new.intermediate_size = len(keep.ffn[0])
    new.num_key_value_heads = len(keep.groups[0])
    new.num_attention_heads = len(keep.groups[0]) * per_group
    new.hidden_size = len(keep.hidden)
    new.rms_norm_eps = config.rms_norm_eps * config.hidden_size / new.hidden_size
    if getattr(config, "layer_types", None):
        new.layer_types = [config.layer_types[i] for i in keep.layers]
    if getattr(config, "max_window_layers", None) is not None:
        new.max_window_layers = min(config.max_window_layers, new.num_hidden_layers)
    return new


def _rows(heads: torch.Tensor, dim: int) -> torch.Tensor:
    """Weight rows of the given head indices when each head spans ``dim`` rows."""
    return (heads.reshape(-1)[:, None] * dim + torch.arange(dim)).reshape(-1)


def query_heads(groups: torch.Tensor, per_group: int, in_group: torch.Tensor | None) -> torch.Tensor:
    """Absolute query-head indices kept: ``in_group`` [kept groups, q] positions, or all of each group."""
    if in_group is None:
        in_group = torch.arange(per_group).expand(len(groups), per_group)
    return (groups[:, None] * per_group + in_group).reshape(-1)


def _copy_linear(src: torch.nn.Linear, dst: torch.nn.Linear, rows: torch.Tensor, cols: torch.Tensor) -> None:
    dst.weight.copy_(src.weight[rows][:, cols])
    if src.bias is not None:
        dst.bias.copy_(src.bias[rows])


def _copy_layer(src, dst, config, groups, ffn, in_group, h) -> None:
    hd = head_dim(config)
    q_rows = _rows(query_heads(groups, group_size(config), in_group), hd)
    kv_rows = _rows(groups, hd)
    attn, new_attn = src.self_attn, dst.self_attn
    _copy_linear(attn.q_proj, new_attn.q_proj, q_rows, h)
    _copy_linear(attn.k_proj, new_attn.k_proj, kv_rows, h)
    _copy_linear(attn.v_proj, new_attn.v_proj, kv_rows, h)
    _copy_linear(attn.o_proj, new_attn.o_proj, h, q_rows)
    _copy_linear(src.mlp.gate_proj, dst.mlp.gate_proj, ffn, h)
    _copy_linear(src.mlp.up_proj, dst.mlp.up_proj, ffn, h)
    _copy_linear(src.mlp.down_proj, dst.mlp.down_proj, h, ffn)


@torch.no_grad()
def apply_keep(model, keep: Keep):
    """The pruned model (float32, eval mode); ``model`` is left untouched."""
    from transformers import AutoModelForCausalLM

    config = model.config
    check_keep(config, keep)
    new_config = pruned_config(config, keep)
    new = AutoModelForCausalLM.from_config(new_config, dtype=torch.float32)
    h = keep.hidden
    norm_scale = math.sqrt(config.hidden_size / len(h))  # see the module docstring
    new.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[:, h])
    new.model.norm.weight.copy_(model.model.norm.weight[h] * norm_scale)
    if not config.tie_word_embeddings:
        new.lm_head.weight.copy_(model.lm_head.weight[:, h])
    heads = keep.heads or [None] * len(keep.layers)
    for j, (i, ffn, groups, in_group) in enumerate(zip(keep.layers, keep.ffn, keep.groups, heads, strict=True)):
        src, dst = model.model.layers[i], new.model.layers[j]
        _copy_layer(src, dst, config, groups, ffn, in_group, h)
        dst.input_layernorm.weight.copy_(src.input_layernorm.weight[h] * norm_scale)
        dst.post_attention_layernorm.weight.copy_(src.post_attention_layernorm.weight[h] * norm_scale)
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
