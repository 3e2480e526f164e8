"""Resolve the teacher a build starts from, and fingerprint it cheaply for stage keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgekit.models import check_architecture, load_config

_SMALL_FILE = 1 << 20  # files below 1 MiB (configs, tokenizers) are hashed whole


@dataclass(frozen=True)
class TeacherRef:
    name: str  # what the bundle is named after
    source: str  # "demo", a folder or a hub id, as the user gave it
    path: str  # what from_pretrained is called on
    fingerprint: str  # changes whenever the teacher's files change


def fingerprint_folder(folder: Path) -> str:
    """Hash of small files' contents and large files' names, sizes and safetensors headers.

    Hashing tens of GB of weights on every run would cost minutes; the safetensors header (tensor
    names, shapes, offsets) plus size and mtime identify a weights file well enough for skipping.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        digest.update(path.relative_to(folder).as_posix().encode())
        if stat.st_size <= _SMALL_FILE:
            digest.update(path.read_bytes())
            continue
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(min(stat.st_size, 1 << 16)))
    return digest.hexdigest()[:16]


def resolve_teacher(source: str, trust_remote_code: bool = False, progress: bool = True) -> TeacherRef:
    """ "demo" builds (or reuses) the built-in teacher; a folder or hub id is checked for support."""
    if source == "demo":
        from edgekit.demo import DEMO_NAME, demo_teacher

        folder = demo_teacher(progress=progress)
        return TeacherRef(DEMO_NAME, "demo", str(folder), fingerprint_folder(folder))
    config = load_config(source, trust_remote_code=trust_remote_code)
    check_architecture(config, source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return TeacherRef(folder.resolve().name, source, str(folder.resolve()), fingerprint_folder(folder))
    return TeacherRef(source.replace("/", "--"), source, source, hashlib.sha256(source.encode()).hexdigest()[:16])
