"""Decide what a path holds and open the backend for it.

Backends are imported lazily so that a missing optional runtime only matters when it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.runtime.base import Backend

GGUF_MAGIC = b"GGUF"


def detect_format(path: str | Path) -> str:
    """One of "gguf", "onnx", "hf", "bundle" for an existing file or folder; else ``InputError``."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file or folder not found")
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == GGUF_MAGIC:
            return "gguf"
        if path.suffix == ".onnx":
            return "onnx"
        raise InputError(path, "not a GGUF file (bad magic), an ONNX model or a model folder")
    if (path / "manifest.json").exists():  # a folder by that name is a damaged bundle, reported as one
        return "bundle"
    if any(path.glob("*.onnx")):
        return "onnx"
    if (path / "config.json").is_file():
        return "hf"
    raise InputError(path, "folder holds no manifest.json, *.onnx or config.json: not a model edgekit can load")


def open_backend(path: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Open ``path`` with the named backend ("auto", "llama.cpp", "onnxruntime", "torch")."""
    fmt = detect_format(path)
    if backend == "auto":
        backend = {"gguf": "llama.cpp", "onnx": "onnxruntime", "hf": "torch"}.get(fmt, "bundle")
    if backend == "llama.cpp":
        from edgekit.runtime.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, **options)
    if backend == "onnxruntime":
        from edgekit.runtime.onnxruntime import open_onnx

        return open_onnx(path, **options)
    if backend == "torch":
        from edgekit.runtime.torch import TorchBackend

        return TorchBackend(path, **options)
    raise InputError(path, f"cannot open a {fmt!r} with backend {backend!r}")
