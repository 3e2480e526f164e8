"""Atomic writes and content hashes.

Nothing half-written may ever be visible under its final name: every artifact is written to a
temporary name in the same folder and renamed into place (rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20  # bytes read at a time when hashing


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: str | Path) -> str:
    """Hex sha256 over every file below a folder (relative path and content), order-independent."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of a JSON-serialisable value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``, else delete it.

    Works for a file or a folder written at the yielded path.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"{target}: nothing was written")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(final: str | Path) -> int:
    """Delete what a killed ``atomic_path`` writer of ``final`` left beside it; returns how many.

    A SIGKILL skips the ``finally`` that removes the temporary, so without this a pipeline that is
    killed and resumed keeps a full hidden copy of every interrupted output. Call it only where no
    other process can be writing ``final`` at the same moment (it would delete that writer's work).
    """
    final = Path(final)
    if not final.parent.is_dir():
        return 0
    stale = list(final.parent.glob(f".{glob.escape(final.name)}.*.tmp"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, value: Any) -> Path:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or malformed file into an ``InputError``."""
    from edgekit.errors import InputError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


MAX_CONFIG_BYTES = 1 << 20  # a profile or build config is a few KiB; more is not a config file


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a TOML file as a dict; every way it can be unreadable becomes one ``ConfigError`` line.

    Catches what ``tomllib`` lets through as tracebacks: binary and UTF-16 files (decode errors),
    deeply nested arrays or tables ("TOML bombs": RecursionError) and files too large to be configs.
    """
    import tomllib

    from edgekit.errors import ConfigError, InputError, Problem

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file not found" if not path.exists() else f"{what} path is not a file")
    try:
        raw = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise InputError(path, f"cannot read {what} ({exc.strerror})") from None

    def bad(message: str) -> ConfigError:
        return ConfigError([Problem(str(path), "", message)])

    if len(raw) > MAX_CONFIG_BYTES:
        raise bad(f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a {what} file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        kind = "UTF-16 text" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else "binary data"
        raise bad(f"holds {kind}; a {what} must be UTF-8 TOML")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 text (byte {exc.start}); a {what} must be UTF-8 TOML") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise bad(f"not valid TOML ({exc})") from None
    except RecursionError:
        raise bad("nested too deeply to be a config (arrays or tables inside each other)") from None
    return data


def package_data_dir(*parts: str) -> Path:
    """A folder of data files shipped inside the ``edgekit`` package (profiles, suites).

    Read through importlib.resources so that a wheel, a non-editable install and a source checkout
    all find the same files; edgekit is never installed zipped, so the resource is a real folder.
    """
    from importlib.resources import files

    return Path(str(files("edgekit").joinpath(*parts)))
