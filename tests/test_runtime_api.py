"""edgekit.load: format routing, bundles, target profiles (backend constructors mocked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import ConfigError, InputError
from edgekit.fileio import sha256_file
from edgekit.runtime import api
from edgekit.runtime.base import ModelInfo


class _Fake:
    def __init__(self, path, **options):
        self.info = ModelInfo("fake", "fake", str(path), "none", 0, 0, 16, 16)
        self.eos_token_ids = []
        self.options = options

    def close(self):
        pass


@pytest.fixture
def opened(monkeypatch):
    """Replace open_backend: records (path, backend, options) of each call and returns a fake backend."""
    calls = []

    def fake_open(path, backend="auto", **options):
        calls.append((Path(path), backend, options))
        return _Fake(path, **options)

    monkeypatch.setattr(api, "open_backend", fake_open)
    return calls


@pytest.fixture
def gguf_file(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture
def onnx_dir(tmp_path) -> Path:
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    return folder


def _bundle(tmp_path: Path, source: Path, manifest: dict) -> Path:
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        shutil.copytree(source, bundle / "models" / "hf")
    _write_manifest(bundle, manifest)
    return bundle


def _write_manifest(bundle: Path, manifest: dict) -> None:
    """``manifest`` plus the sha256 list ``write_bundle`` adds (every file but the manifest)."""
    files = [
        {"path": p.relative_to(bundle).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    ]
    (bundle / "manifest.json").write_text(json.dumps({"files": files, **manifest}))


def test_load_opens_hf_folder_with_torch_when_backend_is_auto(tiny_llama_dir):
    with edgekit.load(tiny_llama_dir) as model:
        assert model.info.backend == "torch" and model.info.format == "hf"


def test_load_routes_each_format_to_its_backend(opened, gguf_file, onnx_dir, tiny_llama_dir):
    for path in (gguf_file, onnx_dir, tiny_llama_dir):
        edgekit.load(path)
    assert [backend for _, backend, _ in opened] == ["llama.cpp", "onnxruntime", "torch"]


def test_load_maps_target_profile_to_llamacpp_options(opened, gguf_file):
    edgekit.load(gguf_file, target="jetson-orin-nano")
    assert opened[0][2] == {"n_threads": 6, "n_gpu_layers": 999, "n_ctx": 2048}


def test_load_maps_target_profile_to_onnx_provider(opened, onnx_dir):
    edgekit.load(onnx_dir, target="jetson-orin-nano")
    assert opened[0][2] == {"n_threads": 6, "provider": "CUDAExecutionProvider", "n_ctx": 2048}


def test_load_explicit_arguments_win_over_target_profile(opened, gguf_file):
    edgekit.load(gguf_file, target="jetson-orin-nano", n_threads=2, n_ctx=256, n_gpu_layers=0)
    assert opened[0][2] == {"n_threads": 2, "n_gpu_layers": 0, "n_ctx": 256}


def test_load_passes_only_explicit_options_when_no_target(opened, gguf_file):
    edgekit.load(gguf_file, n_threads=3)
    assert opened[0][2] == {"n_threads": 3}


def test_load_opens_recommended_artifact_when_path_is_bundle(tiny_llama_dir, tmp_path):
    bundle = _bundle(tmp_path, tiny_llama_dir, {"recommended": {"artifact": "models/hf"}, "artifacts": []})
    with edgekit.load(bundle) as model:
        assert Path(model.info.path) == (bundle / "models" / "hf").resolve()


def test_load_picks_bundle_artifact_of_requested_backend(opened, tiny_llama_dir, tmp_path, gguf_file):
    bundle = _bundle(tmp_path, tiny_llama_dir, {"recommended": {"artifact": "model.gguf"}, "artifacts": []})
    shutil.copy(gguf_file, bundle / "model.gguf")
    manifest = {
        "recommended": {"artifact": "model.gguf"},
        "artifacts": [{"path": "model.gguf", "format": "gguf"}, {"path": "models/hf", "format": "hf"}],
    }
    _write_manifest(bundle, manifest)
    edgekit.load(bundle)
    edgekit.load(bundle, backend="torch")
    assert [(p.name, b) for p, b, _ in opened] == [("model.gguf", "llama.cpp"), ("hf", "torch")]


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ({"artifacts": []}, "recommended: required key is missing"),
        ({"recommended": {"artifact": "../../etc"}}, "outside the bundle"),
        ({"recommended": {"artifact": "missing.gguf"}}, "is missing"),
    ],
)
def test_load_raises_input_error_when_bundle_manifest_is_wrong(tiny_llama_dir, tmp_path, manifest, words):
    bundle = _bundle(tmp_path, tiny_llama_dir, manifest)
    with pytest.raises(InputError, match=words):
        edgekit.load(bundle)


def test_load_raises_config_error_when_backend_is_unknown(tiny_llama_dir):
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow'"):
        edgekit.load(tiny_llama_dir, backend="tensorflow")


def test_load_raises_input_error_when_path_is_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        edgekit.load(tmp_path / "nope.gguf")
