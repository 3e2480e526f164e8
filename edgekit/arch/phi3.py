"""Phi-3 / Phi-3.5-mini / Phi-4-mini: fused qkv_proj and gate_up_proj, partial rotary (Phi-4-mini),
longrope scaling (long and short factor tensors in GGUF)."""

import math

import numpy as np

from edgekit.arch.base import Family, rope_dims
from edgekit.arch.rules import q_width_is_hidden, window_ignored


def _longrope(config) -> dict | None:
    params = getattr(config, "rope_parameters", None) or {}
    return params if params.get("rope_type") in ("longrope", "su") else None


def _refuse(config) -> list[str]:
    problems = q_width_is_hidden(config, "llama.cpp's phi3 loader sizes attn_qkv from hidden")
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type") not in (None, "default", "longrope", "su"):
        problems.append(f"phi3: rope scaling {params.get('rope_type')!r} is not written to GGUF by edgekit")
    scaling = _longrope(config)
    if scaling and len(scaling.get("long_factor") or []) != rope_dims(config) // 2:
        problems.append(f"phi3: longrope needs {rope_dims(config) // 2} long/short factors (rotary dims / 2)")
    return problems


def _hparams(writer, config) -> None:
    scaling = _longrope(config)
    if scaling:
        original = int(scaling.get("original_max_position_embeddings") or config.original_max_position_embeddings)
        scale = config.max_position_embeddings / original
        attn = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0
        writer.add_rope_scaling_orig_ctx_len(original)
        writer.add_rope_scaling_attn_factors(float(scaling.get("attention_factor") or attn))


def _extra(config) -> dict:
    scaling = _longrope(config)
    if not scaling:
        return {}
    return {
        "rope_factors_long.weight": np.asarray(scaling["long_factor"], dtype=np.float32),
        "rope_factors_short.weight": np.asarray(scaling["short_factor"], dtype=np.float32),
    }


FAMILIES = (
    Family(
        model_type="phi3",
        attn_bias="none",
        fused_qkv=True,
        fused_gate_up=True,
        gguf_arch="phi3",
        tiny={"sliding_window": None, "original_max_position_embeddings": 512},
        refuse_gguf=_refuse,
        warn_gguf=lambda config, context: window_ignored(config, context, "llama.cpp (Phi SWA is disabled there)"),
        write_gguf_hparams=_hparams,
        gguf_extra_tensors=_extra,
        gguf_own_rope_scaling=True,
    ),
)
