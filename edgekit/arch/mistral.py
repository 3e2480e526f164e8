"""Mistral 7B-style: a Llama graph with an optional sliding window on every layer."""

from edgekit.arch.base import Family
from edgekit.arch.rules import window_ignored

FAMILIES = (
    Family(
        model_type="mistral",
        gguf_arch="llama",  # llama.cpp converts Mistral to its llama graph, which has no sliding window
        gguf_permute_qk=True,
        tiny={"sliding_window": None},
        warn_gguf=lambda config, context: window_ignored(config, context, "llama.cpp's llama graph"),
    ),
)
