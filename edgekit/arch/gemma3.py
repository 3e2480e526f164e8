"""Gemma 3 text (``gemma3_text``: Gemma 3 1B, and the language model of the larger ones): Gemma 2's
layout plus q/k RMSNorm per head, a local RoPE base for sliding layers, no attention soft-capping."""

from edgekit.arch.base import Family, rope_theta
from edgekit.arch.gemma2 import NORMS
from edgekit.arch.rules import attention_scale_is_head_dim, gemma_embedding_scale, no_rope_scaling, write_swa


def _refuse(config) -> list[str]:
    problems = attention_scale_is_head_dim(config) + no_rope_scaling(config)
    if getattr(config, "attn_logit_softcapping", None):
        problems.append("gemma3_text: attn_logit_softcapping is set but llama.cpp's gemma3 graph does not soft-cap")
    if getattr(config, "use_bidirectional_attention", False):
        problems.append("gemma3_text: bidirectional attention (embedding variant) is not a causal LM")
    return problems


def _hparams(writer, config) -> None:
    write_swa(writer, config)
    if getattr(config, "sliding_window", None):
        writer.add_rope_freq_base_swa(rope_theta(config, "sliding_attention"))
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


FAMILIES = (
    Family(
        model_type="gemma3_text",
        layer_norms=NORMS,
        norm_offset=1.0,
        qk_norm="head",
        embedding_scale=gemma_embedding_scale,
        swa_cache=True,
        gguf_arch="gemma3",
        refuse_gguf=_refuse,
        write_gguf_hparams=_hparams,
        tiny={"sliding_window": 16, "layer_types": None, "final_logit_softcapping": 30.0},
    ),
)
