"""ONNX (onnxruntime-genai builder) per family, parametrized over the registry.

Every registered family either exports to an fp32 package that matches PyTorch (mean KL <= 1e-5,
100 % top-1, tokenizer parity: the gate of ``test_export_onnx_genai.py``) or is refused by
``unsupported_reason`` before any work, and the refusal is still what the builder does when forced.
A new family gets both tests without writing any; if the builder cannot export it, add one line to
``ONNX_REFUSED`` (and the reason to ``unsupported_reason`` and docs/families.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.arch import REGISTRY
from edgekit.errors import StageError, UnsupportedModelError
from edgekit.export.onnx_genai import unsupported_reason
from edgekit.models import load_config

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed")

FAMILIES = sorted(REGISTRY)
# The one list of expected refusals: family -> words its reason must contain (each measured by
# forcing the builder on the tiny model below; see docs/families.md).
ONNX_REFUSED = {
    "olmo2": "no exporter",  # Olmo2ForCausalLM is not in the builder's dispatch (NotImplementedError)
    "smollm3": "NoPE layers",  # the NoPE layer crashes the builder (KeyError 'position_ids')
}
# 4 layers: SmolLM3's 4th layer is NoPE, Gemma's sliding/full pattern repeats. intermediate 768 and
# one KV head keep every projection (Phi-3's fused qkv included) narrower than the 512-token
# vocabulary, which the builder would take for the LM head (see unsupported_reason).
SHAPE = {"intermediate_size": 768, "num_layers": 4, "num_kv_heads": 1}


def test_every_family_is_exported_or_refused_as_listed(make_tiny_hf):
    """No builder run: the cheap check preflight makes agrees with ONNX_REFUSED for every family."""
    for model_type in FAMILIES:
        reason = unsupported_reason(load_config(make_tiny_hf(model_type, **SHAPE)))
        if model_type in ONNX_REFUSED:
            assert reason and ONNX_REFUSED[model_type] in reason, (model_type, reason)
        else:
            assert reason is None, (model_type, reason)


def test_fused_projection_as_wide_as_vocab_is_refused():
    """Phi-3 with 4 query and 2 KV heads of 64: its fused qkv_proj has 512 rows, as many as the vocabulary."""
    from transformers import AutoConfig

    fields = dict(hidden_size=256, intermediate_size=768, num_attention_heads=4, vocab_size=512)
    phi3 = AutoConfig.for_model("phi3", num_key_value_heads=2, **fields)
    phi3.architectures = ["Phi3ForCausalLM"]
    assert "qkv_proj rows" in unsupported_reason(phi3)
    llama = AutoConfig.for_model("llama", num_key_value_heads=2, **fields)
    llama.architectures = ["LlamaForCausalLM"]
    assert unsupported_reason(llama) is None  # separate q/k/v projections: no 512-wide Linear


@pytest.mark.integration
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_fp32_package_matches_pytorch(make_tiny_hf, tmp_path, model_type, tied):
    if model_type in ONNX_REFUSED:
        pytest.skip(f"refused before export: {ONNX_REFUSED[model_type]}")
    from edgekit.export.onnx import export_onnx
    from edgekit.export.verify import verify_artifact

    source = make_tiny_hf(model_type, tie_word_embeddings=tied, **SHAPE)
    (folder,) = export_onnx(source, tmp_path, ["fp32"], progress=False)
    report = verify_artifact(folder, source, level="fp32", max_tokens=512)
    assert report.mean_kl <= 1e-5 and report.top1 == 1.0, report.table()
    assert report.tokenizer_parity, report.tokenizer_mismatches


@pytest.mark.integration
@pytest.mark.parametrize("model_type", FAMILIES)
def test_refusal_is_still_what_the_builder_does(make_tiny_hf, tmp_path, model_type):
    """Refused before writing; forced, the builder fails or writes a wrong graph. If this test fails
    for a family, a newer builder exports it: drop its line from ONNX_REFUSED and unsupported_reason."""
    if model_type not in ONNX_REFUSED:
        pytest.skip("exported (test_fp32_package_matches_pytorch)")
    from edgekit.export.onnx import export_onnx
    from edgekit.export.onnx_genai import BuilderOptions, _run_builder

    source = make_tiny_hf(model_type, **SHAPE)
    with pytest.raises(UnsupportedModelError, match="cannot export to ONNX"):
        export_onnx(source, tmp_path / "refused", ["fp32"], progress=False)
    assert not (tmp_path / "refused" / "onnx-fp32").exists()
    try:
        _run_builder(source, tmp_path / "out", tmp_path / "cache", "fp32", BuilderOptions(), tmp_path / "log")
    except StageError:
        return  # the builder still stops
    assert _forced_mean_kl(source, tmp_path / "out") > 1e-3, "the builder now exports this family correctly"


def _forced_mean_kl(source, package) -> float:
    from edgekit.models import load_model
    from edgekit.quality import compare_logits
    from edgekit.runtime.onnxruntime import GenaiBackend

    ids = np.random.default_rng(0).integers(3, 500, 64).tolist()
    got = GenaiBackend(package).logits(ids)
    with torch.no_grad():
        ref = load_model(source)(input_ids=torch.tensor([ids])).logits[0].numpy()
    return compare_logits(ref[:-1], got[:-1], np.asarray(ids[1:])).mean_kl


@pytest.mark.integration
@pytest.mark.parametrize("model_type", FAMILIES)
def test_pruned_model_exports_to_onnx_and_verifies(make_tiny_hf, tmp_path, model_type):
    """A real prune (half the FFN, half the query heads, half the hidden width: head_dim no longer
    hidden / heads), then an fp32 package, then the verify gate."""
    if model_type in ONNX_REFUSED:
        pytest.skip(f"refused before export: {ONNX_REFUSED[model_type]}")
    from edgekit.export.onnx import export_onnx
    from edgekit.export.verify import verify_artifact
    from edgekit.models import load_model, load_tokenizer, save_model
    from edgekit.prune import PrunePlan, prune_model

    source = make_tiny_hf(model_type, **SHAPE)
    model, tok = load_model(source), load_tokenizer(source)
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    plan = PrunePlan(ffn=0.5, query_heads=0.5, hidden=0.5, round_to=1)
    pruned, _ = prune_model(model, plan, ids, check_gguf=False)
    assert pruned.config.hidden_size == 128
    folder = save_model(pruned, tok, tmp_path / "pruned")
    (package,) = export_onnx(folder, tmp_path / "out", ["fp32"], progress=False)
    report = verify_artifact(package, folder, level="fp32", max_tokens=256)
    assert report.mean_kl <= 1e-5 and report.top1 >= report.min_top1, report.table()
