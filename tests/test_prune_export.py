"""A pruned model is an ordinary HF folder: it reloads, generates, and exports to GGUF and ONNX that verify."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit.export.verify import verify_artifact
from edgekit.models import load_model, load_tokenizer, save_model
from edgekit.prune import PrunePlan, prune_model

K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}
PLAN = PrunePlan(ffn=0.5, hidden=0.5, layers=1, round_to=256)  # 512/1024/3 layers -> 256/512/2


@pytest.fixture(scope="module")
def pruned_dir(make_tiny_hf, tmp_path_factory) -> Path:
    """Hidden 512 -> 256 with 4 heads of 128: head_dim no longer equals hidden / heads, as after real pruning."""
    source = make_tiny_hf("llama", hidden_size=512, intermediate_size=1024, num_heads=4, num_kv_heads=2, num_layers=3)
    model, tokenizer = load_model(source), load_tokenizer(source)
    calibration = tokenizer(["def f(x):\n    return x * 2\n" * 8] * 2, return_tensors="pt")["input_ids"]
    pruned, _ = prune_model(model, PLAN, calibration, criterion="activation")
    return save_model(pruned, tokenizer, tmp_path_factory.mktemp("pruned") / "model")


def test_pruned_model_reloads_with_new_shapes_and_same_logits_when_saved(pruned_dir):
    model = load_model(pruned_dir)
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.head_dim) == (256, 512, 2, 128)
    assert abs(c.rms_norm_eps / 1e-6 - 2.0) < 1e-9  # eps follows the norm rescale (512 -> 256 channels)
    from safetensors.torch import load_file

    saved = load_file(str(pruned_dir / "model.safetensors"))
    assert saved["model.layers.0.self_attn.o_proj.weight"].shape == (256, 512)
    ids = torch.tensor([[1, 5, 9, 200, 17, 3]])
    again = load_model(pruned_dir)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 14)


@pytest.mark.integration
def test_pruned_model_exports_to_gguf_f32_and_k_quant_that_verify(pruned_dir, tmp_path):
    import gguf

    from edgekit.export.gguf import export_gguf

    f32, q4 = export_gguf(pruned_dir, tmp_path, ["F32", "Q4_K_M"], progress=False)
    report = verify_artifact(f32, pruned_dir, level="F32", max_tokens=256)
    assert report.passed, report.table()
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q4).tensors if len(t.shape) == 2}
    assert set(types.values()) <= K_TYPES, types  # rows of 256: real K-quants, no fallback types
    assert "Q4_K" in types.values()
    # random weights are too flat for Q4's default gate; a real model is checked on the demo teacher below
    assert verify_artifact(q4, pruned_dir, level="Q4_K_M", max_tokens=256).top1 > 0.2


@pytest.mark.integration
def test_pruned_model_exports_to_onnx_fp32_that_verifies(make_tiny_hf, tmp_path):
    from edgekit.export.onnx import export_onnx

    # pruned_dir's q_proj is 512 wide like the test vocabulary, which onnxruntime-genai's builder would take for
    # the LM head: prune a source whose widths all differ from it (heads too, so head_dim stays 64)
    source = make_tiny_hf("llama", hidden_size=512, intermediate_size=1536, num_heads=8, num_kv_heads=4, num_layers=3)
    model, tokenizer = load_model(source), load_tokenizer(source)
    calibration = tokenizer(["def f(x):\n    return x * 2\n" * 8] * 2, return_tensors="pt")["input_ids"]
    pruned, _ = prune_model(model, PrunePlan(ffn=0.5, heads=0.5, hidden=0.5, layers=1, round_to=256), calibration)
    pruned_onnx = save_model(pruned, tokenizer, tmp_path / "pruned")
    (folder,) = export_onnx(pruned_onnx, tmp_path, ["fp32"], progress=False)
    report = verify_artifact(folder, pruned_onnx, level="fp32", max_tokens=256)
    assert report.passed, report.table()


@pytest.mark.integration
def test_pruned_demo_teacher_q4_k_m_passes_default_gate_when_exported(tmp_path):
    from edgekit.demo import demo_teacher
    from edgekit.export.gguf import export_gguf

    teacher = demo_teacher(progress=False)
    model, tokenizer = load_model(teacher), load_tokenizer(teacher)
    calibration = tokenizer(["import os\nprint(os.getcwd())\n" * 16] * 2, return_tensors="pt")["input_ids"]
    pruned, _ = prune_model(model, PrunePlan(ffn=0.34, layers=1, round_to=256), calibration)
    assert pruned.config.intermediate_size == 512
    folder = save_model(pruned, tokenizer, tmp_path / "pruned")
    (q4,) = export_gguf(folder, tmp_path / "gguf", ["Q4_K_M"], progress=False)
    result = verify_artifact(q4, folder, level="Q4_K_M", max_tokens=512)
    assert result.passed, result.table()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("arch", "plan"),
    [
        ("qwen2", PrunePlan(heads=0.5, hidden=0.5, layers=1)),  # heads × head_dim stays = hidden (llama.cpp qwen2)
        ("mistral", PrunePlan(query_heads=0.5, hidden=0.5, layers=1)),  # head_dim 64 with 2 heads over hidden 256
    ],
)
def test_pruned_qwen2_and_mistral_export_to_gguf_and_onnx_that_verify(make_tiny_hf, tmp_path, arch, plan):
    from edgekit.export.gguf import export_gguf
    from edgekit.export.onnx import export_onnx

    source = make_tiny_hf(arch, "sp", hidden_size=512, intermediate_size=768, num_heads=8, num_kv_heads=4)
    model, tokenizer = load_model(source), load_tokenizer(source)
    pruned, _ = prune_model(model, plan, tokenizer(["x = 1\n" * 40], return_tensors="pt")["input_ids"])
    folder = save_model(pruned, tokenizer, tmp_path / "model")
    (gguf_file,) = export_gguf(folder, tmp_path / "gguf", ["F32"], progress=False)
    (onnx_dir,) = export_onnx(folder, tmp_path / "onnx", ["fp32"], progress=False)
    for artifact, level in ((gguf_file, "F32"), (onnx_dir, "fp32")):
        report = verify_artifact(artifact, folder, level=level, max_tokens=256)
        if level == "fp32":  # ORT GenAI's tokenizer lacks this "sp" tokenizer's Prepend normalizer (docs/onnx.md)
            assert report.mean_kl <= report.max_mean_kl and report.top1 >= report.min_top1, report.table()
            continue
        assert report.passed, f"{arch} {level}\n{report.table()}"
