"""Shapes a pruned model must keep so that every runtime can still load it.

HF accepts any head_dim, but llama.cpp's loaders are stricter for some families (rules in edgekit/arch).
Checked before any weights are touched, so a pruning run never produces a model that the export stage then rejects.
"""

from __future__ import annotations

from edgekit.arch import head_dim

QK_K = 256  # llama.cpp K-quant super-block: weights per row must be a multiple of this


def gguf_problems(config) -> list[str]:
    """Why a model of this (pruned) config would not load in llama.cpp; empty when it would.

    The rules are the family's (edgekit/arch/<family>.py ``refuse_gguf``) plus RoPE scaling."""
    from edgekit.export.gguf import gguf_refusals

    return gguf_refusals(config)


def k_quant_misfits(config) -> dict[str, int]:
    """Matrix input widths that are not multiples of 256: llama.cpp stores those matrices in a
    fallback type (F16 / Q8_0 / Q5_0) instead of the K-quant asked for, so the file stays large."""
    widths = {
        "hidden": config.hidden_size,
        "intermediate": config.intermediate_size,
        "heads × head_dim": config.num_attention_heads * head_dim(config),
    }
    return {name: width for name, width in widths.items() if width % QK_K}


def transformers_problems(config) -> list[str]:
    """Why transformers would refuse to save a model of this (pruned) config; empty when it would not.

    transformers 5 validates a config when it is saved (Llama: hidden_size must be a multiple of
    num_attention_heads even with an explicit head_dim), so a cut such as 32 → 24 heads of a
    2048-wide Llama-3.2-1B used to fail only at the very end, after scoring and surgery.
    """
    validate = getattr(config, "validate", None)
    if validate is None:
        return []
    try:
        validate()
    except Exception as exc:  # huggingface_hub's StrictDataclassClassValidationError wraps the ValueError
        cause = exc.__cause__ or exc
        return [f"transformers refuses the pruned shape: {str(cause).strip().splitlines()[-1]}"]
    return []
