"""TorchBackend: the PyTorch reference loop matches transformers exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.models import load_model
from edgekit.runtime.base import SamplingParams
from edgekit.runtime.torch import TorchBackend

GREEDY = SamplingParams()


@pytest.mark.parametrize(("arch", "tokenizer"), [("llama", "bpe"), ("qwen2", "sp")])
def test_torch_greedy_equals_hf_generate_when_sampling_is_off(make_tiny_hf, arch, tokenizer):
    folder = make_tiny_hf(arch, tokenizer=tokenizer)
    backend = TorchBackend(folder)
    prompt = backend.tokenize("def main():\n    return")
    ours = list(backend.generate_ids(prompt, 24, GREEDY))
    hf = load_model(folder)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None)
    assert ours == ref[0, len(prompt) :].tolist()


def test_torch_logits_equal_hf_forward_for_every_position(tiny_llama_dir):
    backend = TorchBackend(tiny_llama_dir)
    ids = backend.tokenize("The quick brown fox")
    with torch.no_grad():
        ref = load_model(tiny_llama_dir)(torch.tensor([ids])).logits[0].numpy()
    got = backend.logits(ids)
    assert got.shape == (len(ids), backend.info.vocab_size) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_torch_generate_stops_before_stop_id_when_it_is_produced(tiny_llama_dir):
    backend = TorchBackend(tiny_llama_dir)
    prompt = backend.tokenize("Hello")
    free = list(backend.generate_ids(prompt, 16, GREEDY))
    k = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    assert list(backend.generate_ids(prompt, 16, GREEDY, stop_ids=[free[k]])) == free[:k]


def test_torch_generation_stops_at_context_end_when_n_ctx_is_small(tiny_llama_dir):
    backend = TorchBackend(tiny_llama_dir, n_ctx=12)
    prompt = backend.tokenize("Hello")
    assert len(list(backend.generate_ids(prompt, 100, GREEDY))) == 12 - len(prompt)
    with pytest.raises(EdgekitError, match="does not fit the context"):
        backend.logits(list(range(13)))


def test_torch_info_describes_folder_when_loaded(tiny_llama_dir):
    info = TorchBackend(tiny_llama_dir).info
    assert (info.backend, info.format, info.quantization) == ("torch", "hf", "fp32")
    assert info.file_size == (tiny_llama_dir / "model.safetensors").stat().st_size
    assert info.parameters > 0 and info.n_ctx == 512 and info.vocab_size == 512


@pytest.mark.gpu
def test_torch_greedy_on_cuda_equals_cpu_when_gpu_is_present(tiny_llama_dir):
    cpu, gpu = TorchBackend(tiny_llama_dir), TorchBackend(tiny_llama_dir, device="cuda")
    prompt = cpu.tokenize("def main():")
    assert list(gpu.generate_ids(prompt, 16, GREEDY)) == list(cpu.generate_ids(prompt, 16, GREEDY))
    assert gpu.info.extra["device"] == "cuda"
