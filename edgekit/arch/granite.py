"""IBM Granite 3.x dense: a Llama graph with four scalar multipliers (embedding, residual,
attention, logits), kept in the config and written to GGUF as llama.cpp's *_scale keys."""

from edgekit.arch.base import Family


def _hparams(writer, config) -> None:
    writer.add_embedding_scale(float(config.embedding_multiplier))
    writer.add_residual_scale(float(config.residual_multiplier))
    writer.add_attention_scale(float(config.attention_multiplier))
    writer.add_logit_scale(float(config.logits_scaling))


FAMILIES = (
    Family(
        model_type="granite",
        mlp_bias=True,
        embedding_scale=lambda config: float(config.embedding_multiplier),
        gguf_arch="granite",
        tiny={
            "embedding_multiplier": 6.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.05,
            "logits_scaling": 4.0,
        },
        gguf_permute_qk=True,  # converted as a LlamaModel subclass
        write_gguf_hparams=_hparams,
    ),
)
