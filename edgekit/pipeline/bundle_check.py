"""Reading a bundle safely: the manifest against a schema, and every file used against its sha256.

A bundle travels (copied to a device, downloaded, unpacked), so ``inspect``, ``run`` and
``edgekit.load`` check it on every use: a manifest that is not what ``write_bundle`` writes gives one
line naming the key, and a file whose bytes differ from the manifest's sha256 (tampered, truncated,
replaced) is refused by name before any runtime maps it. Hashing a multi-GB model each time would
make ``run`` slow, so a file's hash is cached under its path, size, mtime and ctime (the ctime changes
on every write and cannot be set back by user tools) and recomputed only when one of them changes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit.errors import InputError, IntegrityError
from edgekit.fileio import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest lists files and figures: a few hundred KiB at most
HASH_CACHE = "sha256-cache.json"


class BundleChanged(IntegrityError):
    """A bundle file differs from its manifest: the message says so and what to do."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(path, f"{problem} (the bundle changed after it was built; rebuild or copy it again)")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


def _inside_bundle(value: str) -> str:
    """A manifest path must stay in the bundle: relative, no ``..``, no backslashes or drive letters."""
    parts = PurePosixPath(value).parts
    if not value or value.startswith("/") or ".." in parts or "\\" in value or ":" in value:
        raise ValueError(f"{value!r} points outside the bundle (expected a relative path inside it)")
    return value


BundlePath = Annotated[str, Field(min_length=1), AfterValidator(_inside_bundle)]


class FileEntry(_Entry):
    path: BundlePath
    bytes: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


Figure = Annotated[float, Field(allow_inf_nan=False)] | None  # a measurement; None where none was made


class Verification(_Entry):
    mean_kl: Figure = None
    top1: Figure = None
    passed: bool = False


class BenchFigures(_Entry):
    decode_tokens_per_s: Figure = None
    peak_rss_bytes: Figure = None


class ArtifactEntry(_Entry):
    path: BundlePath
    format: str = ""
    quant: str = ""
    file_size_bytes: Annotated[int, Field(ge=0)] = 0
    verification: Verification = Verification()
    bench: BenchFigures | None = None


class Recommended(_Entry):
    artifact: BundlePath
    quant: str = ""
    basis: str = ""
    reason: str = ""


class Teacher(_Entry):
    source: str = ""


class Student(_Entry):
    parameters: Annotated[int, Field(ge=0)] = 0


class Stage(_Entry):
    name: str
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class Manifest(_Entry):
    schema_version: int = MANIFEST_SCHEMA
    files: list[FileEntry]
    recommended: Recommended
    artifacts: list[ArtifactEntry] = []
    target: str = ""
    teacher: Teacher = Teacher()
    student: Student = Student()
    stages: list[Stage] = []

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != MANIFEST_SCHEMA:
            raise ValueError(f"schema {value} is not {MANIFEST_SCHEMA} (written by another edgekit version)")
        return value


def load_manifest(bundle: str | Path) -> dict[str, Any]:
    """The bundle's manifest, parsed and checked against the schema; ``InputError`` naming the key otherwise."""
    path = Path(bundle) / MANIFEST
    if not path.exists():
        raise InputError(path, "bundle manifest not found (is this a bundle folder written by `edgekit build`?)")
    if not path.is_file():
        raise InputError(path, "bundle manifest is not a file")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(path, f"bundle manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(path, f"bundle manifest is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"bundle manifest is not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(path, "bundle manifest is nested too deeply to be a manifest") from None
    if not isinstance(data, dict):
        raise InputError(path, f"bundle manifest is a JSON {type(data).__name__}, expected an object")
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "required key is missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise InputError(path, f"bundle manifest: {key}: {message}{more}") from None
    return data


def verify_files(bundle: str | Path, manifest: dict[str, Any], under: str | None = None) -> int:
    """Check the files the manifest lists (only those at or below ``under`` when given); returns bytes checked.

    ``IntegrityError`` naming the first file that is missing, has another size or another sha256, and
    for an artifact folder any file in it that the manifest does not list (an added weight file).
    """
    bundle = Path(bundle)
    entries = [e for e in manifest["files"] if under is None or _below(e["path"], under)]
    if under is not None:
        _refuse_unlisted(bundle, under, {e["path"] for e in manifest["files"]})
        if not entries:
            raise BundleChanged(bundle / under, "the manifest lists no sha256 for this artifact")
    cache = _HashCache()
    try:
        for entry in entries:
            _verify_one(bundle / entry["path"], entry, cache)
    finally:
        cache.save()
    return sum(e["bytes"] for e in entries)


def _below(path: str, under: str) -> bool:
    """``path`` is ``under`` itself, inside it (a folder) or its sidecar (``model.gguf.json``)."""
    under = under.rstrip("/")
    return path == under or path.startswith(f"{under}/") or path == f"{under}.json"


def _refuse_unlisted(bundle: Path, under: str, listed: set[str]) -> None:
    folder = bundle / under
    if not folder.is_dir():
        return
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.relative_to(bundle).as_posix() not in listed:
            raise BundleChanged(file, "file is not listed in the bundle manifest")


def _verify_one(path: Path, entry: dict[str, Any], cache: _HashCache) -> None:
    if not path.is_file():
        raise BundleChanged(path, "file listed in the bundle manifest is missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        expected = entry["bytes"]
        raise BundleChanged(path, f"file has {size:,} bytes, the manifest says {expected:,} (truncated or changed)")
    if cache.sha256(path) != entry["sha256"]:
        raise BundleChanged(path, "file content differs from the sha256 in the bundle manifest")


class _HashCache:
    """sha256 of files keyed by resolved path, size, mtime and ctime (ns), kept in the user cache folder."""

    def __init__(self) -> None:
        self.path = _cache_dir() / HASH_CACHE
        self.entries: dict[str, list] = {}
        self.dirty = False
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self.entries = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError, RecursionError):
            self.entries = {}  # a damaged cache only costs a re-hash

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        cached = self.entries.get(key)
        if isinstance(cached, list) and len(cached) == 4 and cached[:3] == stamp and isinstance(cached[3], str):
            return cached[3]
        digest = sha256_file(path)
        self.entries[key] = [*stamp, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        with contextlib.suppress(OSError):  # a read-only or full cache folder must not stop a verified run
            write_json_atomic(self.path, self.entries)


def _cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("EDGEKIT_CACHE_DIR") or user_cache_dir("edgekit"))
