"""LlamaCppBackend: all-position logits through the C API, on a context opened for fast decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp")

from edgekit.export.gguf import export_gguf
from edgekit.models import load_model
from edgekit.runtime.base import SamplingParams
from edgekit.runtime.llamacpp import LlamaCppBackend

PROMPT = "import os\nclass Reader:"


@pytest.fixture(scope="module")
def gguf_f32(make_tiny_hf, tmp_path_factory) -> Path:
    (path,) = export_gguf(make_tiny_hf("llama"), tmp_path_factory.mktemp("llamacpp-f32"), ["F32"], progress=False)
    return path


@pytest.fixture(scope="module")
def backend(gguf_f32):
    b = LlamaCppBackend(gguf_f32, n_threads=2, n_ctx=256)
    yield b
    b.close()


def test_logits_equal_pytorch_at_every_position_when_f32(backend, make_tiny_hf):
    ids = backend.tokenize(PROMPT)
    with torch.no_grad():
        ref = load_model(make_tiny_hf("llama"))(torch.tensor([ids])).logits[0].numpy()
    got = backend.logits(ids)
    assert got.shape == ref.shape == (len(ids), backend.info.vocab_size)
    np.testing.assert_allclose(got, ref, atol=2e-2)


def test_logits_span_several_batches_when_input_is_longer_than_n_batch(gguf_f32):
    small = LlamaCppBackend(gguf_f32, n_threads=2, n_ctx=256, n_batch=8)
    try:
        ids = small.tokenize(PROMPT * 3)
        assert len(ids) > 8
        got = small.logits(ids)
    finally:
        small.close()
    whole = LlamaCppBackend(gguf_f32, n_threads=2, n_ctx=256)
    try:
        np.testing.assert_allclose(got, whole.logits(ids), atol=1e-3)
    finally:
        whole.close()


def test_generate_after_logits_repeats_greedy_ids_when_cache_was_reused(backend):
    ids = backend.tokenize(PROMPT)
    before = list(backend.generate_ids(ids, 16, SamplingParams()))
    backend.logits([*ids, 5, 6, 7])  # a different sequence through the same context
    after = list(backend.generate_ids(ids, 16, SamplingParams()))
    assert after == before
    # each greedy token is the argmax of a fresh full-sequence scoring (decode path == logits path)
    rescored = [int(np.argmax(backend.logits(ids + before[:i])[-1])) for i in range(len(before))]
    assert rescored == before


def test_sampling_repeats_only_when_seed_is_fixed(backend):
    ids = backend.tokenize(PROMPT)
    seeded = SamplingParams(temperature=1.0, seed=11)
    first = list(backend.generate_ids(ids, 24, seeded))
    assert list(backend.generate_ids(ids, 24, seeded)) == first
    unseeded = [tuple(backend.generate_ids(ids, 24, SamplingParams(temperature=1.0))) for _ in range(3)]
    assert len(set(unseeded)) > 1
