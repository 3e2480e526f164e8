"""Shapes a pruned model must keep so that every runtime can still load it.

HF accepts any head_dim, but llama.cpp's loaders are stricter for some families. Checked before any
weights are touched, so a pruning run never produces a model that the export stage then rejects.
"""

from __future__ import annotations

from edgekit.prune.surgery import head_dim

QK_K = 256  # llama.cpp K-quant super-block: weights per row must be a multiple of this

# model_type -> why num_heads × head_dim must equal hidden_size for its GGUF to load
Q_WIDTH_IS_HIDDEN = {
    "qwen2": "llama.cpp's qwen2 loader sizes attn_q and attn_output as hidden × hidden",
}


def gguf_problems(config) -> list[str]:
    """Why a model of this (pruned) config would not load in llama.cpp; empty when it would."""
    reason = Q_WIDTH_IS_HIDDEN.get(getattr(config, "model_type", ""))
    width = config.num_attention_heads * head_dim(config)
    if reason and width != config.hidden_size:
        return [
            f"{config.model_type}: heads × head_dim = {width} but hidden = {config.hidden_size}; {reason}. "
            "Prune heads and hidden width together so they stay equal (e.g. --heads 0.5 --hidden 0.5), "
            "or skip this check if you export only ONNX"
        ]
    return []


def k_quant_misfits(config) -> dict[str, int]:
    """Matrix input widths that are not multiples of 256: llama.cpp stores those matrices in a
    fallback type (F16 / Q8_0 / Q5_0) instead of the K-quant asked for, so the file stays large."""
    widths = {
        "hidden": config.hidden_size,
        "intermediate": config.intermediate_size,
        "heads × head_dim": config.num_attention_heads * head_dim(config),
    }
    return {name: width for name, width in widths.items() if width % QK_K}
