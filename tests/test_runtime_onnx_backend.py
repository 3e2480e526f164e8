"""OrtBackend: greedy parity with PyTorch, streaming, seeds, info, and safe refusal of broken files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import BackendUnavailable, InputError
from edgekit.export.onnx import export_onnx
from edgekit.models import load_model
from edgekit.runtime.base import Backend, SamplingParams
from edgekit.runtime.onnx_check import check_onnx
from edgekit.runtime.ort_loop import OrtBackend, pick_provider


def require_optimum() -> None:
    """The optimum route's tests need ``edgekit[optimum]`` (optimum-onnx caps transformers < 4.58)."""
    import importlib.util

    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.exporters.onnx") is None:
        pytest.skip("optimum route: optimum-onnx is not installed (pip install 'edgekit[optimum]')")


PROMPT = "import os\nclass Reader:"


@pytest.fixture(scope="session")
def onnx_llama(tmp_path_factory, make_tiny_hf) -> Path:
    """The tiny Llama exported to fp32 ONNX once per session (shared with the export tests' folder)."""
    out = tmp_path_factory.getbasetemp() / "onnx-export-llama-fp32"
    if not out.exists():
        require_optimum()
        export_onnx(make_tiny_hf("llama"), out, ["fp32"], progress=False, route="optimum")
    return out / "onnx-fp32"


@pytest.fixture(scope="session")
def backend(onnx_llama) -> OrtBackend:
    return OrtBackend(onnx_llama, n_threads=2)


def torch_greedy(model_dir: Path, ids: list[int], n: int) -> list[int]:
    model = load_model(model_dir)
    ids, out = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            out.append(token)
            ids.append(token)
    return out


@pytest.mark.integration
def test_ort_greedy_equals_pytorch_greedy_when_fp32(backend, tiny_llama_dir):
    ids = backend.tokenize(PROMPT)
    got = list(backend.generate_ids(ids, 24, SamplingParams()))
    assert got == torch_greedy(tiny_llama_dir, ids, 24)


@pytest.mark.integration
def test_ort_streaming_equals_full_scoring_when_greedy(backend):
    """Each streamed token is the argmax of a fresh full-sequence pass (cache path == no-cache path)."""
    ids = backend.tokenize(PROMPT)
    streamed = list(backend.generate_ids(ids, 8, SamplingParams()))
    rescored = [int(np.argmax(backend.logits(ids + streamed[:i])[-1])) for i in range(8)]
    assert streamed == rescored


@pytest.mark.integration
def test_ort_sampling_repeats_when_seed_fixed(backend):
    ids = backend.tokenize(PROMPT)
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7)
    first = list(backend.generate_ids(ids, 16, params))
    assert first == list(backend.generate_ids(ids, 16, params))
    assert first != list(backend.generate_ids(ids, 16, SamplingParams(temperature=0.9, seed=8)))


@pytest.mark.integration
def test_ort_stops_before_stop_id_when_generated(backend):
    ids = backend.tokenize(PROMPT)
    full = list(backend.generate_ids(ids, 10, SamplingParams()))
    stopped = list(backend.generate_ids(ids, 10, SamplingParams(), stop_ids=[full[3]]))
    assert stopped == full[: full.index(full[3])]


@pytest.mark.integration
def test_ort_info_reports_sidecar_and_sizes_when_loaded(backend, onnx_llama):
    assert isinstance(backend, Backend)
    info = backend.info
    assert (info.backend, info.format, info.quantization) == ("onnxruntime", "onnx", "fp32")
    assert info.file_size == (onnx_llama / "model.onnx").stat().st_size
    assert info.vocab_size == 512 and info.parameters > 1_000_000
    assert backend.detokenize(backend.tokenize("hello world", add_special_tokens=False)) == "hello world"


def test_pick_provider_prefers_cuda_when_onnxruntime_gpu_offers_it():
    assert pick_provider(None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "CUDAExecutionProvider"
    assert pick_provider(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == "CPUExecutionProvider"
    assert pick_provider("CPUExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == (
        "CPUExecutionProvider"
    )


def test_pick_provider_raises_backend_unavailable_when_requested_provider_is_missing():
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        pick_provider("CUDAExecutionProvider", ["CPUExecutionProvider"])


def test_check_onnx_raises_input_error_when_folder_has_no_model(tmp_path):
    with pytest.raises(InputError, match=r"no model\.onnx"):
        check_onnx(tmp_path)


_CHILD = textwrap.dedent(
    """
    import sys
    from edgekit.errors import BackendUnavailable, InputError
    from edgekit.runtime.ort_loop import OrtBackend, pick_provider
    for folder in sys.argv[1:]:
        try:
            OrtBackend(folder)
            print("LOADED", folder)
        except InputError as exc:
            print("INPUTERROR", exc)
    """
)


@pytest.mark.integration
def test_ort_refuses_broken_model_files_with_input_error_when_loaded_in_child(onnx_llama, tmp_path):
    """Empty, truncated, random-byte graphs and truncated external data: clear error, normal exit."""
    data = (onnx_llama / "model.onnx").read_bytes()
    cases = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(0).bytes(4096),
    }
    folders = []
    for name, content in cases.items():
        folder = tmp_path / name
        shutil.copytree(onnx_llama, folder)
        (folder / "model.onnx").write_bytes(content)
        folders.append(folder)
    external = tmp_path / "external"
    external.mkdir()
    import onnx

    model = onnx.load(str(onnx_llama / "model.onnx"))
    onnx.save_model(model, str(external / "model.onnx"), save_as_external_data=True, location="model.onnx_data")
    with open(external / "model.onnx_data", "r+b") as handle:
        handle.truncate(1000)
    folders.append(external)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, folders)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    lines = [line for line in child.stdout.splitlines() if line.startswith(("INPUTERROR", "LOADED"))]
    assert len(lines) == 4 and all(line.startswith("INPUTERROR") for line in lines), child.stdout
    assert "empty" in lines[0] and "external data" in lines[3]
