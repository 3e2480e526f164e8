"""GGUF export through the family spec, for every registered family (parametrized over the registry).

F32 files must match PyTorch (mean KL <= 1e-5, 100 % top-1) in llama.cpp; families or configs
llama.cpp cannot run are refused before anything is written, with the reason.
"""

from __future__ import annotations

import pytest
import torch

from edgekit.arch import REGISTRY, family_of
from edgekit.errors import UnsupportedModelError
from edgekit.export.gguf import export_gguf, gguf_refusals, gguf_warnings
from edgekit.models import load_config

GGUF_FAMILIES = sorted(name for name, family in REGISTRY.items() if family.gguf_arch)
# families whose llama.cpp graph has no separate output tensor are exported tied
TIED = {"gemma2"}


def _tensor_names(path) -> set[str]:
    import gguf

    return {t.name for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("model_type", GGUF_FAMILIES)
def test_f32_names_come_from_the_arch_table(make_tiny_hf, tmp_path, model_type):
    import gguf

    model_dir = make_tiny_hf(model_type, tie_word_embeddings=model_type in TIED)
    path = _export_or_xfail(model_dir, tmp_path)
    family = family_of(load_config(model_dir))
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[family.gguf_arch]
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
    for name in _tensor_names(path):
        assert name.rsplit(".", 1)[0].replace(".0", ".{bid}").replace(".1", ".{bid}") in allowed, name


def _export_or_xfail(model_dir, out):
    from edgekit.errors import InputError

    try:
        (path,) = export_gguf(model_dir, out, ["F32"], progress=False)
    except InputError as exc:  # transformers 5 maps qwen2 folders to Qwen2Tokenizer, which adds a token
        if "tokenizer has" in str(exc):
            pytest.xfail(f"test tokenizer reloads with an extra token: {exc}")
        raise
    return path


@pytest.mark.integration
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", GGUF_FAMILIES)
def test_f32_export_matches_pytorch_in_llama_cpp(make_tiny_hf, tmp_path, model_type, tied):
    pytest.importorskip("llama_cpp")
    from edgekit.export.verify import verify_artifact

    model_dir = make_tiny_hf(model_type, tie_word_embeddings=tied or model_type in TIED)
    path = _export_or_xfail(model_dir, tmp_path)
    # F32 KV cache: llama.cpp's default f16 cache alone moves KL to ~3e-7 and flips near-tied top-1s
    report = verify_artifact(path, model_dir, max_tokens=256, backend_options={"kv_f32": True})
    assert report.mean_kl <= 1e-5, report.table()
    assert report.top1 == 1.0, report.table()


def test_refusals_name_the_reason_before_work(make_tiny_hf, tmp_path):
    untied_gemma2 = make_tiny_hf("gemma2", tie_word_embeddings=False)
    with pytest.raises(UnsupportedModelError, match="no output tensor"):
        export_gguf(untied_gemma2, tmp_path / "out", ["F32"], progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    config = load_config(make_tiny_hf("qwen2"))
    config.num_attention_heads, config.num_key_value_heads = 2, 1  # heads × head_dim != hidden
    assert any("hidden" in p for p in gguf_refusals(config))
    smol = load_config(make_tiny_hf("smollm3", num_layers=4))
    smol.no_rope_layers = [1, 0, 1, 1]
    assert any("no_rope_layers" in p for p in gguf_refusals(smol))


def test_mistral_window_shorter_than_context_warns():
    from published_configs import MISTRAL_7B_V03, hf_config

    config = hf_config({**MISTRAL_7B_V03, "sliding_window": 4096})
    assert gguf_warnings(config, 8192) and "4096" in gguf_warnings(config, 8192)[0]
    assert gguf_warnings(config, 4096) == []


@pytest.mark.integration
@pytest.mark.parametrize("model_type", GGUF_FAMILIES)
def test_pruned_model_exports_and_verifies(make_tiny_hf, tmp_path, model_type):
    """A real prune (half the FFN, a quarter of the hidden width), then F32 GGUF, then verify."""
    pytest.importorskip("llama_cpp")
    from edgekit.export.verify import verify_artifact
    from edgekit.models import load_model, load_tokenizer, save_model
    from edgekit.prune import PrunePlan, prune_model

    source = make_tiny_hf(model_type, tie_word_embeddings=model_type in TIED)
    model, tok = load_model(source), load_tokenizer(source)
    if len(tok) > model.config.vocab_size:
        pytest.xfail("test tokenizer reloads with an extra token (transformers 5 Qwen2Tokenizer)")
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    pruned, _ = prune_model(model, PrunePlan(ffn=0.5, heads=0.5, hidden=0.5, round_to=1), ids)
    folder = save_model(pruned, tok, tmp_path / "pruned")
    path = _export_or_xfail(folder, tmp_path / "out")
    report = verify_artifact(path, folder, max_tokens=256, backend_options={"kv_f32": True})
    # the verify gate's F32 logit thresholds (tokenizer parity is the tokenizer's business, not the
    # family's): a pruned random model is near-uniform, so exact ties in top-1 can flip
    # (ggml's f16 GELU table alone moves Gemma's KL to ~5e-8)
    assert report.mean_kl <= 1e-5 and report.top1 >= report.min_top1, report.table()


@pytest.mark.integration
@pytest.mark.parametrize("model_type", GGUF_FAMILIES)
def test_q8_0_export_passes_the_levels_default_gate(bpe_tokenizer, tmp_path, model_type):
    """Q8_0 through edgekit export + verify with the level's default thresholds (edgekit.formats).

    On a trained tiny model: a random one's near-flat distributions make top-1 a coin toss between
    near-ties (measured: Q8_0 of a random tiny Llama 91 % top-1 < the 95 % gate; trained 99 %).
    """
    pytest.importorskip("llama_cpp")
    from conftest import tiny_vocab_size

    from edgekit.export.verify import verify_artifact
    from edgekit.models import TinySpec, peak_tiny_model, save_model, tiny_model

    tok = bpe_tokenizer
    spec = TinySpec(
        arch=model_type, vocab_size=tiny_vocab_size(model_type, tok), tie_word_embeddings=model_type in TIED
    )
    model = tiny_model(spec)
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    source = save_model(peak_tiny_model(model, tok), tok, tmp_path / "model")
    (path,) = export_gguf(source, tmp_path / "out", ["Q8_0"], progress=False)
    report = verify_artifact(path, source, level="Q8_0", max_tokens=512)
    assert report.passed, report.table()
