"""GGUF export: exact F32 against PyTorch per family, tokenizers, real K-quants, imatrix, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import InputError, UnsupportedModelError
from edgekit.export.gguf import export_gguf
from edgekit.export.imatrix import compute_imatrix
from edgekit.export.sidecar import read_sidecar
from edgekit.export.stress import STRESS_TEXTS
from edgekit.export.verify import verify_artifact
from edgekit.models import load_model
from edgekit.runtime.gguf_check import check_gguf

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("arch", "tokenizer", "overrides"),
    [
        ("llama", "bpe", {}),
        ("mistral", "sp", {}),
        ("qwen2", "bpe", {"tie_word_embeddings": True}),
    ],
)
def test_f32_export_matches_pytorch(make_tiny_hf, tmp_path, arch, tokenizer, overrides):
    model_dir = make_tiny_hf(arch, tokenizer=tokenizer, **overrides)
    (path,) = export_gguf(model_dir, tmp_path, ["F32"], progress=False)
    # an F32 KV cache: llama.cpp's default f16 cache flips near-tied top-1s of a random model
    report = verify_artifact(path, model_dir, max_tokens=256, backend_options={"kv_f32": True})
    assert report.mean_kl <= 1e-5, report.table()
    assert report.top1 == 1.0, report.table()
    assert report.tokenizer_parity, report.tokenizer_mismatches
    assert report.passed
    assert check_gguf(path)["architecture"] == (
        "qwen2" if arch == "qwen2" else "llama"
    )  # llama.cpp runs Mistral as llama


def test_tokenizer_parity_covers_the_whole_stress_set(make_tiny_hf, tmp_path):
    """Both tokenizer styles give llama.cpp the same ids as the HF tokenizer on every stress text."""
    from edgekit.models import load_tokenizer
    from edgekit.runtime.llamacpp import LlamaCppBackend

    assert len(STRESS_TEXTS) >= 10
    for style in ("bpe", "sp"):
        model_dir = make_tiny_hf("llama", tokenizer=style)
        (path,) = export_gguf(model_dir, tmp_path / style, ["F16"], progress=False)
        tok, backend = load_tokenizer(model_dir), LlamaCppBackend(path)
        try:
            for text in STRESS_TEXTS:
                assert backend.tokenize(text) == tok(text, split_special_tokens=True)["input_ids"], (style, text)
        finally:
            backend.close()


def test_k_quants_really_quantize_and_verify(trained_tiny_dir, tmp_path):
    import gguf

    paths = export_gguf(trained_tiny_dir, tmp_path, ["F32", "Q8_0", "Q4_K_M"], progress=False)
    sizes = [p.stat().st_size for p in paths]
    assert sizes[0] > sizes[1] > sizes[2]
    types = {t.tensor_type.name for t in gguf.GGUFReader(paths[2]).tensors}
    assert "Q4_K" in types, types  # rows of 256: the K-quant really happened, not a fallback
    report = verify_artifact(paths[2], trained_tiny_dir, max_tokens=256)
    assert report.tokenizer_parity and report.passed, report.table()
    assert read_sidecar(paths[2])["imatrix"]["tokens"] > 0
    assert read_sidecar(paths[1])["imatrix"] is None  # Q8_0 does not use one


@torch.no_grad()
def test_imatrix_equals_a_direct_computation(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    rows = torch.randint(0, model.config.vocab_size, (3, 32), generator=torch.Generator().manual_seed(0))
    values, tokens = compute_imatrix(model, rows, batch=2)
    assert tokens == 96
    hidden = model(input_ids=rows, output_hidden_states=True).hidden_states
    # layer 1's q/k/v see input_layernorm(hidden entering layer 1); the output matrix sees the final norm
    x = model.model.layers[1].input_layernorm(hidden[1]).reshape(-1, model.config.hidden_size)
    np.testing.assert_allclose(values["blk.1.attn_q.weight"], (x * x).mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(values["blk.1.attn_v.weight"], (x * x).mean(0).numpy(), rtol=1e-5)
    final = hidden[-1].reshape(-1, model.config.hidden_size)
    np.testing.assert_allclose(values["output.weight"], (final * final).mean(0).numpy(), rtol=1e-5)
    assert values["blk.0.ffn_down.weight"].shape == (model.config.intermediate_size,)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "too short"), (b"not a gguf file at all, just text", "bad magic")],
)
def test_damaged_files_are_refused_with_the_file_named(tmp_path, content, problem):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=problem) as info:
        check_gguf(bad)
    assert str(bad) in str(info.value)


def test_truncated_file_is_refused_before_llama_cpp_sees_it(tiny_llama_dir, tmp_path):
    (path,) = export_gguf(tiny_llama_dir, tmp_path, ["F16"], progress=False)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        check_gguf(cut)


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        export_gguf(tmp_path / "gpt2", tmp_path / "out", ["F16"], progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_exports_and_verifies_and_rejects_unknown_levels(trained_tiny_dir, tmp_path):
    def edgekit(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "edgekit", "export", str(trained_tiny_dir), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)

    ok = edgekit("--format", "gguf", "--quant", "F32,Q5_K_M", "--out", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert "pass" in ok.stdout and "FAIL" not in ok.stdout
    assert sorted(p.name for p in (tmp_path / "out").glob("*.gguf")) == ["model-F32.gguf", "model-Q5_K_M.gguf"]
    bad = edgekit("--quant", "Q3_WHATEVER", "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "Q3_WHATEVER" in bad.stderr and "Traceback" not in bad.stderr
