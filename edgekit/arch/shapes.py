"""Tensor shapes a config implies, and the arithmetic derived from them, in one place.

Parameter count, KV-cache bytes and bytes read per generated token all come from
:func:`tensor_shapes`, which lists every HF parameter a family's config implies. Tests check the
count against ``sum(p.numel())`` of a loaded model for every registered family.
"""

from __future__ import annotations

import math
from typing import Any

from edgekit.arch.base import Family, head_dim, kv_rows, layer_types, q_rows

KV_BYTES_PER_VALUE = 2  # llama.cpp and ORT keep the KV cache in f16 by default


def _bias(family: Family, config: Any) -> tuple[bool, bool]:
    """(q/k/v have biases, o has a bias)."""
    if family.attn_bias == "qkv":
        return True, False
    if family.attn_bias == "config" and getattr(config, "attention_bias", False):
        return True, True
    return False, False


def layer_shapes(family: Family, config: Any) -> dict[str, tuple[int, ...]]:
    """HF parameter name inside ``<layers>.N.`` -> shape, for one decoder layer."""
    h, ffn, hd = config.hidden_size, config.intermediate_size, head_dim(config)
    q, kv = q_rows(config), kv_rows(config)
    qkv_bias, o_bias = _bias(family, config)
    mlp_bias = family.mlp_bias and getattr(config, "mlp_bias", False)
    shapes: dict[str, tuple[int, ...]] = {}
    if family.fused_qkv:
        shapes["self_attn.qkv_proj.weight"] = (q + 2 * kv, h)
        if qkv_bias:
            shapes["self_attn.qkv_proj.bias"] = (q + 2 * kv,)
    else:
        for name, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            shapes[f"self_attn.{name}.weight"] = (rows, h)
            if qkv_bias:
                shapes[f"self_attn.{name}.bias"] = (rows,)
    shapes["self_attn.o_proj.weight"] = (h, q)
    if o_bias:
        shapes["self_attn.o_proj.bias"] = (h,)
    if family.qk_norm == "head":
        shapes["self_attn.q_norm.weight"] = shapes["self_attn.k_norm.weight"] = (hd,)
    elif family.qk_norm == "full":
        shapes["self_attn.q_norm.weight"], shapes["self_attn.k_norm.weight"] = (q,), (kv,)
    mlp = {"gate_up_proj": 2 * ffn} if family.fused_gate_up else {"gate_proj": ffn, "up_proj": ffn}
    for name, rows in mlp.items():
        shapes[f"mlp.{name}.weight"] = (rows, h)
        if mlp_bias:
            shapes[f"mlp.{name}.bias"] = (rows,)
    shapes["mlp.down_proj.weight"] = (h, ffn)
    if mlp_bias:
        shapes["mlp.down_proj.bias"] = (h,)
    for norm in family.layer_norms:
        shapes[f"{norm}.weight"] = (h,)
    return shapes


def tensor_shapes(family: Family, config: Any) -> dict[str, tuple[int, ...]]:
    """Every HF parameter name -> shape (``lm_head.weight`` included even when tied)."""
    shapes = {
        f"{family.embed_path}.weight": (config.vocab_size, config.hidden_size),
        f"{family.final_norm_path}.weight": (config.hidden_size,),
        f"{family.lm_head_path}.weight": (config.vocab_size, config.hidden_size),
    }
    per_layer = layer_shapes(family, config)
    for i in range(config.num_hidden_layers):
        shapes.update({f"{family.layers_path}.{i}.{k}": v for k, v in per_layer.items()})
    return shapes


def is_tied(config: Any) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False))


def count_params(family: Family, config: Any) -> int:
    """Exact number of distinct parameters (tied embeddings counted once)."""
    shapes = tensor_shapes(family, config)
    if is_tied(config):
        shapes.pop(f"{family.lm_head_path}.weight")
    return sum(math.prod(s) for s in shapes.values())


def params_read_per_token(family: Family, config: Any) -> int:
    """Parameters a decode step reads: all but the input embedding table (one row of it is read),
    unless that table is also the output layer (tied), which reads it whole."""
    total = count_params(family, config)
    return total if is_tied(config) else total - config.vocab_size * config.hidden_size


def kv_tokens(family: Family, config: Any, context: int) -> list[int]:
    """Tokens each layer's KV cache holds at ``context``: the window for sliding layers when
    llama.cpp caches only the window for this family, else the whole context."""
    window = getattr(config, "sliding_window", None)
    out = []
    for kind in layer_types(config):
        sliding = kind == "sliding_attention" and window and family.swa_cache
        out.append(min(context, int(window)) if sliding else context)
    return out


def kv_cache_bytes(family: Family, config: Any, context: int) -> int:
    """K and V of every layer at ``context`` tokens: Σ_layers 2 × kv_heads × head_dim × tokens × 2 bytes."""
    per_token = 2 * kv_rows(config) * KV_BYTES_PER_VALUE
    return per_token * sum(kv_tokens(family, config, context))


def decode_bytes_per_token(family: Family, config: Any, bits_per_weight: float, context: int) -> float:
    """Bytes one decode step reads: the weights it uses at ``bits_per_weight`` plus the KV cache."""
    return params_read_per_token(family, config) * bits_per_weight / 8 + kv_cache_bytes(family, config, context)


def layer_params(family: Family, config: Any) -> int:
    """Parameters of one decoder layer (the largest, when layers differ: they do not in any family here)."""
    return sum(math.prod(s) for s in layer_shapes(family, config).values())


def largest_tensor_params(family: Family, config: Any) -> int:
    """Elements of the largest single tensor (the embedding table in every family here): what a
    writer that converts one tensor at a time holds at once."""
    return max(math.prod(s) for s in tensor_shapes(family, config).values())
