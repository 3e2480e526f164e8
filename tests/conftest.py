"""Shared fixtures: tiny models with real tokenizers, built in seconds and cached per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit.data import builtin_documents
from edgekit.models import TinySpec, save_model, tiny_model
from edgekit.tokenizer import train_byte_level_bpe, train_sentencepiece_bpe

torch.set_num_threads(2)

_TOKENIZER_DOCS = 400  # enough text for a 512-token vocabulary in well under a second


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not _has_cuda():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE tokenizer (512 tokens) trained on the built-in corpus."""
    return train_byte_level_bpe(builtin_documents()[:_TOKENIZER_DOCS], vocab_size=512)


@pytest.fixture(scope="session")
def sp_tokenizer():
    """A SentencePiece-style (▁, byte fallback) tokenizer of 512 tokens."""
    return train_sentencepiece_bpe(builtin_documents()[:_TOKENIZER_DOCS], vocab_size=512)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: the CI box has 2 shared cores and tiny models stall when oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_vocab_size(arch: str, tokenizer) -> int:
    """Embedding rows of a tiny model for ``tokenizer``.

    transformers 5 reloads a qwen2 folder's tokenizer as ``Qwen2Tokenizer``, which adds
    ``<|endoftext|>`` when the vocabulary lacks it; qwen2 models get 64 padded rows for it, as
    published Qwen2 checkpoints carry padded rows too.
    """
    return len(tokenizer) + (64 if arch == "qwen2" else 0)


@pytest.fixture(scope="session")
def make_tiny_hf(tmp_path_factory, bpe_tokenizer, sp_tokenizer):
    """Factory: a saved HF folder (model + tokenizer) for an arch/tokenizer pair, cached per session.

    ``make_tiny_hf("qwen2", tokenizer="sp", num_layers=3)`` -> Path. Vocab size follows the tokenizer.
    """
    cache: dict[tuple, Path] = {}

    def build(arch: str = "llama", tokenizer: str = "bpe", **overrides) -> Path:
        key = (arch, tokenizer, tuple(sorted(overrides.items())))
        if key not in cache:
            tok = bpe_tokenizer if tokenizer == "bpe" else sp_tokenizer
            spec = TinySpec(arch=arch, vocab_size=tiny_vocab_size(arch, tok), **overrides)
            model = tiny_model(spec)
            model.config.bos_token_id = tok.bos_token_id
            model.config.eos_token_id = tok.eos_token_id
            model.config.pad_token_id = tok.pad_token_id
            folder = tmp_path_factory.mktemp(f"tiny-{arch}-{tokenizer}") / "model"
            cache[key] = save_model(model, tok, folder)
        return cache[key]

    return build


@pytest.fixture
def tiny_llama_dir(make_tiny_hf) -> Path:
    """The default tiny model: Llama, byte-level BPE, 2 layers, hidden 256, GQA 4:2."""
    return make_tiny_hf("llama")


@pytest.fixture(scope="session")
def trained_tiny_dir(tmp_path_factory, bpe_tokenizer) -> Path:
    """The default tiny Llama after a few seconds of next-token training on the built-in corpus.

    A random model's next-token distribution is nearly flat, so top-1 agreement between it and a
    quantized copy is decided by ties; after a little training the outputs are peaked like a real
    model's, and quality thresholds mean something.
    """
    from edgekit.data import pack, split_documents, tokenize_documents

    tok = bpe_tokenizer
    model = tiny_model(TinySpec(arch="llama", vocab_size=len(tok)))
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    train, _ = split_documents(builtin_documents()[:600])
    rows = pack(tokenize_documents(tok, train), 64, 256)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = rows[(step * 8) % (len(rows) - 8) :][:8]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return save_model(model, tok, tmp_path_factory.mktemp("tiny-trained") / "model")
