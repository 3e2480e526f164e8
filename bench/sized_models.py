"""Llama-3-shaped models of real sizes, with random weights and the real Llama 3 tokenizer.

For the size benchmarks (bench/bench_sizes.py) and for trying edgekit on models as large as the ones
users ship: the shapes are Llama 3.2's published ones (1B, 3B) and a smaller rung of the same family,
the weights are random (no hub here), stored in bf16 safetensors as the published checkpoints are,
and the tokenizer is llama.cpp's copy of the Llama 3 vocabulary rebuilt as a HF tokenizer
(``tests/llama_vocab.py``; fetched once from the llama-cpp-python sdist on PyPI).

    python bench/sized_models.py 1b /work/models/llama-1b
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

_LLAMA3 = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}

# name -> the config fields that differ; 1b and 3b are Llama 3.2's published shapes
SIZES = {
    "0.3b": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8, "num_attention_heads": 16,
             "num_key_value_heads": 4, "head_dim": 64},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 64},
    "3b": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
           "num_key_value_heads": 8, "head_dim": 128},
}  # fmt: skip


def config_of(size: str) -> dict:
    """The config.json fields of the ``size`` rung."""
    return {**_LLAMA3, **SIZES[size]}


def make_sized_model(size: str, out: Path, seed: int = 0) -> Path:
    """Write a random-weight bf16 Llama-3-shaped model of ``size`` with the Llama 3 tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    sys.path.insert(0, str(_ROOT))
    from tests.llama_vocab import hf_tokenizer, vocab_dir

    folder = vocab_dir()
    if folder is None:
        raise SystemExit("the Llama 3 vocabulary could not be had (llama-cpp-python sdist from PyPI)")
    tokenizer = hf_tokenizer(folder, "llama-bpe")
    torch.manual_seed(seed)
    config = LlamaConfig(**config_of(size))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    path = make_sized_model(args.size, args.out)
    n = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    print(f"{path}: {n / 2**30:.2f} GiB of safetensors")


if __name__ == "__main__":
    main()
