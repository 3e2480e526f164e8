"""Llama 1-3.x (llama3 RoPE via a rope_freqs tensor, see export/gguf_rope.py), SmolLM2, TinyLlama."""

from edgekit.arch.base import Family

FAMILIES = (
    Family(
        model_type="llama",
        mlp_bias=True,
        gguf_arch="llama",
        gguf_permute_qk=True,  # llama.cpp's llama graph rotates interleaved pairs (convert_hf_to_gguf permutes)
    ),
)
