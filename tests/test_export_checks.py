"""Bad input to export (missing folder, config and weights that disagree) and the verify gate's CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import InputError
from edgekit.export.checks import check_source
from edgekit.export.gguf import export_gguf
from edgekit.export.onnx import export_onnx
from edgekit.export.sidecar import read_sidecar

ROOT = Path(__file__).resolve().parent.parent


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _drop_tensor(src: Path, dst: Path, name: str) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    del tensors[name]
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            lambda src, dst: _edit_config(src, dst, intermediate_size=384),
            "model.layers.0.mlp.gate_proj.weight has shape [512, 256], config.json implies [384, 256]",
        ),
        (
            lambda src, dst: _edit_config(src, dst, num_hidden_layers=3),
            "model.layers.2.self_attn.q_proj.weight is missing",
        ),
        (lambda src, dst: _edit_config(src, dst, num_key_value_heads=3), "not a multiple of num_key_value_heads=3"),
        (lambda src, dst: _drop_tensor(src, dst, "lm_head.weight"), "lm_head.weight is missing"),
    ],
)
def test_export_names_the_tensor_and_writes_nothing_when_shapes_disagree(tiny_llama_dir, tmp_path, broken, message):
    model_dir = broken(tiny_llama_dir, tmp_path / "model")
    with pytest.raises(InputError, match="weights do not match config") as info:
        export_gguf(model_dir, tmp_path / "gguf", ["F32", "Q4_K_M"], progress=False)
    assert message in str(info.value) and str(model_dir) in str(info.value)
    assert "\n" not in str(info.value)  # one line
    with pytest.raises(InputError, match="weights do not match config"):
        export_onnx(model_dir, tmp_path / "onnx", ["fp32"], progress=False)
    assert not (tmp_path / "gguf").exists() and not (tmp_path / "onnx").exists()


def test_check_source_accepts_consistent_folders(make_tiny_hf, tiny_llama_dir):
    for folder in (tiny_llama_dir, make_tiny_hf("qwen2", tie_word_embeddings=True), make_tiny_hf("mistral")):
        assert check_source(folder).model_type in ("llama", "qwen2", "mistral")


def test_gguf_export_raises_input_error_when_folder_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        export_gguf(tmp_path / "nope", tmp_path / "out", ["F32"], progress=False)
    assert not (tmp_path / "out").exists()


def _edgekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_verify_cli_exits_3_with_a_table_when_the_target_threshold_fails(trained_tiny_dir, tmp_path):
    (path,) = export_gguf(trained_tiny_dir, tmp_path / "out", ["Q4_K_M"], progress=False)
    strict = tmp_path / "strict.toml"
    profile = (ROOT / "targets" / "raspberry-pi-5.toml").read_text()
    strict.write_text(
        profile + "\n[verify]\nheldout_tokens = 256\n\n[verify.thresholds.Q4_K_M]\nmax_mean_kl = 1e-9\nmin_top1 = 1.0\n"
    )
    ok = _edgekit("verify", str(path), "--reference", str(trained_tiny_dir), "--heldout-tokens", "256")
    assert ok.returncode == 0, ok.stderr
    assert "pass" in ok.stdout and read_sidecar(path)["verification"]["passed"] is True
    bad = _edgekit("verify", str(path), "--reference", str(trained_tiny_dir), "--target", str(strict))
    assert bad.returncode == 3, bad.stderr
    assert "verification failed for Q4_K_M" in bad.stderr  # level from the sidecar, threshold from the target
    assert "mean KL" in bad.stderr and "FAIL" in bad.stderr and "<= 1.000e-09" in bad.stderr
    assert "Traceback" not in bad.stderr
    record = read_sidecar(path)["verification"]
    assert record["passed"] is False and record["tokens"] == 255  # the target's held-out size (256 - 1 targets)


def test_export_cli_reports_a_missing_folder_in_one_line(tmp_path):
    result = _edgekit("export", str(tmp_path / "missing"), "--format", "gguf", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "not found" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_cli_applies_tensor_type_overrides_when_given(trained_tiny_dir, tmp_path):
    import gguf

    out = tmp_path / "out"
    args = ["export", str(trained_tiny_dir), "--quant", "Q4_K_M", "--out", str(out), "--no-verify"]
    result = _edgekit(*args, "--tensor-type", r"^output\.weight$=Q8_0", "--tensor-type", "ffn_up=Q5_K")
    assert result.returncode == 0, result.stderr
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out / "model-Q4_K_M.gguf").tensors}
    assert types["output.weight"] == "Q8_0" and types["blk.1.ffn_up.weight"] == "Q5_K"
    bad = _edgekit(*args, "--tensor-type", "no-equals-sign")
    assert bad.returncode == 2 and "PATTERN=TYPE" in bad.stderr
