"""OLMo 2: norms after attention and after the MLP (none before), q/k RMSNorm over the full
projection width ([heads × head_dim] and [kv_heads × head_dim])."""

from edgekit.arch.base import Family
from edgekit.arch.rules import no_rope_scaling

FAMILIES = (
    Family(
        model_type="olmo2",
        layer_norms=("post_attention_layernorm", "post_feedforward_layernorm"),
        qk_norm="full",
        hidden_probe=None,  # no norm sees the layer input: probe the residual stream itself
        gguf_arch="olmo2",
        gguf_needs_output=True,  # llama.cpp's olmo2 loader has no tied fallback
        refuse_gguf=no_rope_scaling,
    ),
)
