"""Safetensors files are checked before torch maps them: bad files give one clear InputError."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import InputError
from edgekit.runtime.safetensors_check import check_safetensors, check_safetensors_folder

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _corrupt(folder: Path, how: str) -> Path:
    """Replace model.safetensors in ``folder`` by an empty, random-byte or truncated file."""
    weights = folder / "model.safetensors"
    if how == "empty":
        weights.write_bytes(b"")
    elif how == "random":
        weights.write_bytes(os.urandom(4096))
    else:
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    return weights


def test_check_safetensors_returns_tensor_table_when_file_is_valid(tiny_llama_dir):
    table = check_safetensors(tiny_llama_dir / "model.safetensors")
    assert "model.embed_tokens.weight" in table
    assert table["model.embed_tokens.weight"]["dtype"] == "F32"


@pytest.mark.parametrize(
    ("how", "words"), [("empty", "at least 8"), ("random", "not a safetensors"), ("truncated", "truncated")]
)
def test_check_safetensors_raises_input_error_when_file_is_damaged(tiny_llama_dir, tmp_path, how, words):
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "m")
    weights = _corrupt(folder, how)
    with pytest.raises(InputError) as info:
        check_safetensors(weights)
    assert info.value.path == str(weights)
    assert words in info.value.problem


def test_check_safetensors_raises_when_shape_disagrees_with_offsets(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}
    path = _write(tmp_path / "x.safetensors", header, b"0" * 20)
    with pytest.raises(InputError, match="needs 24 bytes"):
        check_safetensors(path)


def test_check_safetensors_raises_when_tensors_overlap(tmp_path):
    header = {
        "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
        "b": {"dtype": "F16", "shape": [2], "data_offsets": [2, 6]},
    }
    with pytest.raises(InputError, match="gap or overlap"):
        check_safetensors(_write(tmp_path / "x.safetensors", header, b"0" * 6))


def test_check_safetensors_raises_when_dtype_is_unknown(tmp_path):
    path = _write(tmp_path / "x.safetensors", {"w": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, b"0" * 4)
    with pytest.raises(InputError, match="unknown dtype"):
        check_safetensors(path)


def test_check_safetensors_folder_refuses_pickle_when_no_safetensors(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(InputError, match="pickle checkpoints are refused"):
        check_safetensors_folder(tmp_path)


def test_load_exits_normally_with_clear_errors_when_weights_are_damaged_in_child(tiny_llama_dir, tmp_path):
    folders = []
    for how in ("empty", "random", "truncated"):
        folder = shutil.copytree(tiny_llama_dir, tmp_path / how)
        _corrupt(folder, how)
        folders.append(str(folder))
    script = (
        "import sys, edgekit\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        edgekit.load(folder)\n"
        "    except edgekit.InputError as exc:\n"
        "        print('CLEAR', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", script, *folders]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("CLEAR") and "model.safetensors" in line for line in lines)


def test_cli_run_exits_with_code_2_not_a_signal_when_weights_are_truncated(tiny_llama_dir, tmp_path):
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "m")
    _corrupt(folder, "truncated")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "edgekit", "run", str(folder), "--prompt", "hi"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "truncated" in proc.stderr
