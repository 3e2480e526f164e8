"""Published hyper-parameters of well-known models (their config.json), for size and plan tests.

Only the fields ``plan`` reads; parameter totals in the tests come from the models' safetensors.
"""

from __future__ import annotations

_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-05, "rope_theta": 500000.0}

LLAMA_32_1B = {
    **_LLAMA,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}
LLAMA_31_8B = {
    **_LLAMA,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}
LLAMA_31_70B = {
    **_LLAMA,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}
QWEN_25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}


def _dense(model_type, hidden, inter, layers, heads, kv, vocab, tie, **extra) -> dict:
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "tie_word_embeddings": tie,
        **extra,
    }


# One published model per registered family (config.json values); parameter totals, where pinned in
# PUBLISHED_PARAMS, are the sums over each model's safetensors as listed on its model card.
SMOLLM2_135M = _dense("llama", 576, 1536, 30, 9, 3, 49152, True)
MISTRAL_7B_V03 = _dense("mistral", 4096, 14336, 32, 32, 8, 32768, False, sliding_window=None)
QWEN3_06B = _dense("qwen3", 1024, 3072, 28, 16, 8, 151936, True, head_dim=128)
GEMMA2_2B = _dense("gemma2", 2304, 9216, 26, 8, 4, 256000, True, head_dim=256, sliding_window=4096)
GEMMA3_1B = _dense("gemma3_text", 1152, 6912, 26, 4, 1, 262144, True, head_dim=256, sliding_window=512)
PHI35_MINI = _dense("phi3", 3072, 8192, 32, 32, 32, 32064, False, pad_token_id=32000)
PHI4_MINI = _dense("phi3", 3072, 8192, 32, 24, 8, 200064, True, pad_token_id=199999, partial_rotary_factor=0.75)
SMOLLM3_3B = _dense("smollm3", 2048, 11008, 36, 16, 4, 128256, True)
GRANITE_33_2B = _dense("granite", 2048, 8192, 40, 32, 8, 49159, True, embedding_multiplier=12.0)
OLMO2_1B = _dense("olmo2", 2048, 8192, 16, 16, 16, 100352, False)

PUBLISHED = {
    "Llama-3.2-1B": LLAMA_32_1B,
    "Llama-3.1-8B": LLAMA_31_8B,
    "SmolLM2-135M": SMOLLM2_135M,
    "Mistral-7B-v0.3": MISTRAL_7B_V03,
    "Qwen2.5-0.5B": QWEN_25_05B,
    "Qwen3-0.6B": QWEN3_06B,
    "gemma-2-2b": GEMMA2_2B,
    "gemma-3-1b": GEMMA3_1B,
    "Phi-3.5-mini": PHI35_MINI,
    "Phi-4-mini": PHI4_MINI,
    "SmolLM3-3B": SMOLLM3_3B,
    "granite-3.3-2b": GRANITE_33_2B,
    "OLMo-2-1B": OLMO2_1B,
}
PUBLISHED_PARAMS = {
    "Llama-3.2-1B": 1_235_814_400,
    "SmolLM2-135M": 134_515_008,
    "Qwen2.5-0.5B": 494_032_768,
    "Mistral-7B-v0.3": 7_248_023_552,
    "gemma-3-1b": 999_885_952,
}


def hf_config(published: dict):
    """The transformers config object for one of the dicts above."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        published["model_type"], **{k: v for k, v in published.items() if k not in ("architectures", "model_type")}
    )
