"""Gemma 2: RMSNorm as (1 + w), norms before and after attention and MLP, embeddings × sqrt(hidden),
attention and final-logit soft-capping, alternating sliding / full attention layers."""

from edgekit.arch.base import Family
from edgekit.arch.rules import attention_scale_is_head_dim, gemma_embedding_scale, no_rope_scaling, write_swa

NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")


def _refuse(config) -> list[str]:
    problems = attention_scale_is_head_dim(config) + no_rope_scaling(config)
    if not config.tie_word_embeddings:
        problems.append("gemma2: llama.cpp's gemma2 graph has no output tensor (uses the embeddings); untied model")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if not getattr(config, key, None):
            problems.append(f"gemma2: {key} is unset but llama.cpp's gemma2 graph always soft-caps")
    return problems


def _hparams(writer, config) -> None:
    write_swa(writer, config)
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping))
    writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


FAMILIES = (
    Family(
        model_type="gemma2",
        layer_norms=NORMS,
        norm_offset=1.0,
        embedding_scale=gemma_embedding_scale,
        swa_cache=True,
        gguf_arch="gemma2",
        refuse_gguf=_refuse,
        write_gguf_hparams=_hparams,
        tiny={"sliding_window": 16},
    ),
)
