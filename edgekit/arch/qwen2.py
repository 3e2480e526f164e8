"""Qwen2 / Qwen2.5: q/k/v biases, no o bias; llama.cpp's loader needs heads × head_dim = hidden."""

from edgekit.arch.base import Family
from edgekit.arch.rules import q_width_is_hidden, window_ignored

FAMILIES = (
    Family(
        model_type="qwen2",
        attn_bias="qkv",
        gguf_arch="qwen2",
        tiny={"use_sliding_window": False},
        refuse_gguf=lambda c: q_width_is_hidden(
            c, "llama.cpp's qwen2 loader sizes attn_q and attn_output as hidden × hidden"
        ),
        warn_gguf=lambda config, context: window_ignored(config, context, "llama.cpp's qwen2 graph"),
    ),
)
