"""Qwen3 (dense): RMSNorm on q and k per head ([head_dim], shared by all heads), no biases."""

from edgekit.arch.base import Family
from edgekit.arch.rules import window_ignored

FAMILIES = (
    Family(
        model_type="qwen3",
        qk_norm="head",
        gguf_arch="qwen3",
        warn_gguf=lambda config, context: window_ignored(config, context, "llama.cpp's qwen3 graph"),
    ),
)
