"""Small reusable facts about llama.cpp loaders, used by several family modules.

Each function takes the HF config (and the context length where it matters) and returns problems
(refusals) or warnings as one-line strings; family modules combine them.
"""

from __future__ import annotations

import math
from typing import Any

from edgekit.arch.base import head_dim, layer_types, q_rows


def window_ignored(config: Any, context: int, runtime: str) -> list[str]:
    """Warning when a sliding window the runtime does not apply is shorter than the context."""
    window = getattr(config, "sliding_window", None)
    used = getattr(config, "use_sliding_window", True)
    if window and used and int(window) < context:
        return [
            f"{config.model_type}: sliding window {window} < context {context} but {runtime} attends to the "
            f"whole context, so outputs past {window} tokens differ from PyTorch (verify will show it); "
            f"use a context <= {window} to match"
        ]
    return []


def q_width_is_hidden(config: Any, why: str) -> list[str]:
    """Refusal when heads × head_dim != hidden for a loader that assumes they are equal."""
    if q_rows(config) != config.hidden_size:
        return [
            f"{config.model_type}: heads × head_dim = {q_rows(config)} but hidden = {config.hidden_size}; {why}. "
            "Prune heads and hidden width together so they stay equal (e.g. --heads 0.5 --hidden 0.5)"
        ]
    return []


def attention_scale_is_head_dim(config: Any) -> list[str]:
    """Gemma: llama.cpp scales attention by 1/sqrt(head_dim) and ignores query_pre_attn_scalar."""
    scalar = getattr(config, "query_pre_attn_scalar", None)
    if scalar is not None and scalar != head_dim(config):
        return [
            f"{config.model_type}: query_pre_attn_scalar = {scalar} differs from head_dim = {head_dim(config)}; "
            "llama.cpp scales attention by 1/sqrt(head_dim)"
        ]
    return []


def no_rope_scaling(config: Any) -> list[str]:
    """Refusal for families whose llama.cpp graph applies no RoPE scaling edgekit can write."""
    params = getattr(config, "rope_parameters", None) or {}
    kinds = {p.get("rope_type") for p in params.values() if isinstance(p, dict)} or {params.get("rope_type")}
    kinds -= {None, "default"}
    if kinds:
        return [f"{config.model_type}: rope scaling {sorted(kinds)} is not written to GGUF by edgekit for this family"]
    return []


def write_swa(writer: Any, config: Any) -> None:
    """Sliding window and the per-layer pattern (array of bools, True = sliding) llama.cpp reads."""
    window = getattr(config, "sliding_window", None)
    if window:
        writer.add_sliding_window(int(window))
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types(config)])


def gemma_embedding_scale(config: Any) -> float:
    """Gemma multiplies input embeddings by sqrt(hidden) (not stored in the weights)."""
    return math.sqrt(config.hidden_size)
