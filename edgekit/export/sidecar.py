"""The JSON sidecar every exported artifact carries: what it is, where it came from, how it verified.

A file ``model-Q4_K_M.gguf`` has ``model-Q4_K_M.gguf.json`` beside it; a folder artifact (ONNX)
holds ``edgekit-artifact.json`` inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.fileio import read_json, sha256_file, sha256_tree, write_json_atomic

SIDECAR_IN_FOLDER = "edgekit-artifact.json"
SCHEMA_VERSION = 1


def sidecar_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact / SIDECAR_IN_FOLDER if artifact.is_dir() else artifact.with_name(artifact.name + ".json")


def artifact_sha256(artifact: str | Path) -> str:
    """sha256 of a file, or of a folder's files (the sidecar itself excluded)."""
    artifact = Path(artifact)
    if artifact.is_file():
        return sha256_file(artifact)
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in artifact.rglob("*") if p.is_file() and p.name != SIDECAR_IN_FOLDER):
        digest.update(path.relative_to(artifact).as_posix().encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def write_sidecar(
    artifact: str | Path,
    *,
    format: str,
    quantization: str,
    source_model: str | Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write (or replace) the sidecar of a finished artifact; returns the sidecar's path."""
    source = Path(source_model)
    record = {
        "schema_version": SCHEMA_VERSION,
        "artifact": Path(artifact).name,
        "format": format,
        "quantization": quantization,
        "sha256": artifact_sha256(artifact),
        "source_model": str(source),
        "source_model_sha256": sha256_tree(source) if source.is_dir() else None,
        **(extra or {}),
    }
    return write_json_atomic(sidecar_path(artifact), record)


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    return read_json(sidecar_path(artifact))


def update_sidecar(artifact: str | Path, **fields: Any) -> Path:
    """Merge ``fields`` into an existing sidecar (e.g. ``verification=...``)."""
    record = read_sidecar(artifact)
    record.update(fields)
    return write_json_atomic(sidecar_path(artifact), record)
