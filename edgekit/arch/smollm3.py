"""SmolLM3: a Llama graph where every 4th layer has no RoPE (NoPE), listed in ``no_rope_layers``."""

from edgekit.arch.base import Family

NOPE_STEP = 4  # llama.cpp hard-codes n_no_rope_layer_step = 4 for smollm3


def _refuse(config) -> list[str]:
    flags = list(getattr(config, "no_rope_layers", None) or [])
    expected = [int((i + 1) % NOPE_STEP != 0) for i in range(config.num_hidden_layers)]
    if flags and flags != expected:
        return [
            f"smollm3: no_rope_layers {flags} is not llama.cpp's fixed pattern (every {NOPE_STEP}th layer without "
            f"RoPE, {expected}); removing layers shifts it: keep layers in whole groups of {NOPE_STEP}"
        ]
    return []


FAMILIES = (
    Family(
        model_type="smollm3",
        mlp_bias=True,
        per_layer_lists=("layer_types", "no_rope_layers"),
        gguf_arch="smollm3",
        gguf_permute_qk=True,  # converted as a LlamaModel subclass
        refuse_gguf=_refuse,
    ),
)
