"""ONNX export: parity with PyTorch per architecture, quantized levels, bad input, int4 packing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import ConfigError, InputError, UnsupportedModelError
from edgekit.export.onnx import export_onnx
from edgekit.export.onnx_int4 import dequantize_blocks, quantize_blocks
from edgekit.formats import level
from edgekit.models import load_model
from edgekit.quality import compare_logits
from edgekit.runtime.ort_loop import OrtBackend


def require_optimum() -> None:
    """The optimum route's tests need ``edgekit[optimum]`` (optimum-onnx caps transformers < 4.58)."""
    import importlib.util

    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.exporters.onnx") is None:
        pytest.skip("optimum route: optimum-onnx is not installed (pip install 'edgekit[optimum]')")


TEXT = "def parse(path):\n    return open(path).read().split()  # tokens, émoji 🙂"


def exported(tmp_path_factory, make_tiny_hf, arch: str, quants: tuple[str, ...]) -> dict[str, Path]:
    """Export ``arch`` once per session (folders shared through the session's base temp dir)."""
    require_optimum()
    out = tmp_path_factory.getbasetemp() / f"onnx-export-{arch}-{'-'.join(quants)}"
    if not out.exists():
        export_onnx(make_tiny_hf(arch), out, list(quants), progress=False, route="optimum")
    return {q: out / f"onnx-{q}" for q in quants}


def torch_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    model = load_model(model_dir)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


@pytest.fixture(scope="session")
def llama_levels(tmp_path_factory, make_tiny_hf) -> dict[str, Path]:
    return exported(tmp_path_factory, make_tiny_hf, "llama", ("fp32", "int8", "int4"))


@pytest.mark.integration
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_onnx_fp32_logits_match_pytorch_within_1e3_when_exported(tmp_path_factory, make_tiny_hf, arch):
    folder = exported(tmp_path_factory, make_tiny_hf, arch, ("fp32",))["fp32"]
    backend = OrtBackend(folder)
    ids = backend.tokenize(TEXT)
    diff = np.abs(backend.logits(ids) - torch_logits(make_tiny_hf(arch), ids)).max()
    assert diff <= 1e-3


@pytest.mark.integration
def test_onnx_levels_have_sidecar_and_shrink_when_quantized(llama_levels):
    sizes = {}
    for quant, folder in llama_levels.items():
        sidecar = json.loads((folder / "edgekit-artifact.json").read_text())
        assert sidecar["format"] == "onnx" and sidecar["quantization"] == quant
        assert (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file()
        sizes[quant] = (folder / "model.onnx").stat().st_size
    assert sizes["int8"] < 0.5 * sizes["fp32"]
    assert sizes["int4"] < sizes["int8"]


@pytest.mark.integration
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_onnx_quantized_kl_within_level_threshold_when_loaded(llama_levels, tiny_llama_dir, quant):
    backend = OrtBackend(llama_levels[quant])
    ids = backend.tokenize(TEXT)
    ref = torch_logits(tiny_llama_dir, ids)
    result = compare_logits(ref[:-1], backend.logits(ids)[:-1], np.asarray(ids[1:]))
    assert backend.info.quantization == quant
    assert result.mean_kl <= level(quant).max_mean_kl
    # random-init logits are nearly flat, so top-1 flips easily; the profile's top-1 floor is for trained models
    assert result.top1 >= 0.5


def test_export_onnx_raises_input_error_when_folder_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        export_onnx(tmp_path / "nope", tmp_path / "out", route="optimum")
    assert not (tmp_path / "out").exists()


def test_export_onnx_raises_config_error_when_level_unknown(tiny_llama_dir, tmp_path):
    with pytest.raises(ConfigError, match="fp8"):
        export_onnx(tiny_llama_dir, tmp_path / "out", ["fp8"], route="optimum")
    assert not (tmp_path / "out").exists()


def test_export_onnx_names_supported_archs_when_architecture_unsupported(tiny_llama_dir, tmp_path):
    source = tmp_path / "gpt2ish"
    source.mkdir()
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    config["model_type"] = "gpt2"
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2"):
        export_onnx(source, tmp_path / "out", route="optimum")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("k", [64, 80])
def test_int4_blocks_roundtrip_within_half_step_when_quantized(k):
    weight = np.random.default_rng(0).normal(size=(k, 24)).astype(np.float32)
    packed, scales, zeros = quantize_blocks(weight, 32)
    restored = dequantize_blocks(packed, scales, zeros, k)
    n_blocks = -(-k // 32)
    step = np.repeat(scales.reshape(24, n_blocks), 32, axis=1)[:, :k].T
    assert packed.shape == (24, n_blocks, 16)
    assert np.all(np.abs(restored - weight) <= step / 2 + 1e-6)


@pytest.mark.integration
def test_export_onnx_replaces_level_and_leaves_no_temp_when_rerun(tiny_llama_dir, tmp_path):
    out = tmp_path / "out"
    (out / "onnx-int4").mkdir(parents=True)
    (out / "onnx-int4" / "stale.txt").write_text("old")
    require_optimum()
    folders = export_onnx(tiny_llama_dir, out, ["int4"], block_size=64, progress=False, route="optimum")
    assert [p.name for p in out.iterdir()] == ["onnx-int4"] and folders == [out / "onnx-int4"]
    assert not (out / "onnx-int4" / "stale.txt").exists()
    assert json.loads((out / "onnx-int4" / "edgekit-artifact.json").read_text())["int4"]["block_size"] == 64
