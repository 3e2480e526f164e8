"""Atomic writes and content hashes.

Nothing half-written may ever be visible under its final name: every artifact is written to a
temporary name in the same folder and renamed into place (rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import errno
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


TEMP_PREFIX = ".edgekit-tmp-"  # every temporary edgekit makes starts with this, inside the output folder


def _temp_name(label: str) -> str:
    """``.edgekit-tmp-<pid>-<label>.``: the pid tells a later run whether the writer is still alive."""
    return f"{TEMP_PREFIX}{os.getpid()}-{label}."


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``, else delete it.

    Works for a file or a folder written at the yielded path. The temporary lives in a folder named
    ``.edgekit-tmp-<pid>-<name>.*`` beside ``final``, so a later run can find and remove it when a
    kill skipped the cleanup (``clean_temporaries``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(final.name), suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"{target}: nothing was written")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    except OSError as exc:
        raise _disk_error(exc, final) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def temporary_dir(folder: str | Path, label: str = "work") -> Iterator[Path]:
    """A scratch folder inside ``folder`` (``.edgekit-tmp-<pid>-<label>.*``), removed however the block ends.

    Scratch files belong inside the output folder, not beside it: the user chose that place and its
    disk, and a later run there removes what a killed one left (``clean_temporaries``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_temporaries(folder)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(label), dir=folder))
    try:
        yield tmp
    except OSError as exc:
        raise _disk_error(exc, folder) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_temporaries(folder: str | Path) -> int:
    """Remove the temporaries that killed edgekit processes left in ``folder``; returns how many.

    Only entries named ``.edgekit-tmp-<pid>-...`` whose process has ended are removed, so a writer
    running now (this process or another) keeps its work.
    Entries of the older ``.<name>.*.tmp`` form are left to ``remove_stale_temporaries``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f"{glob.escape(TEMP_PREFIX)}*"):
        if _in_use(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def _in_use(path: Path) -> bool:
    """Whether the process named in a ``.edgekit-tmp-<pid>-`` entry is this one or still running."""
    pid_text = path.name[len(TEMP_PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid == os.getpid() or _pid_alive(pid)


def remove_stale_temporaries(final: str | Path) -> int:
    """Delete what a killed ``atomic_path`` writer of ``final`` left beside it; returns how many.

    A SIGKILL skips the ``finally`` that removes the temporary, so without this a pipeline that is
    killed and resumed keeps a full hidden copy of every interrupted output. Call it only where no
    other process can be writing ``final`` at the same moment (it would delete that writer's work).
    """
    final = Path(final)
    if not final.parent.is_dir():
        return 0
    stale = list(final.parent.glob(f".{glob.escape(final.name)}.*.tmp"))  # the form older versions wrote
    stale += [
        p for p in final.parent.glob(f"{glob.escape(TEMP_PREFIX)}*-{glob.escape(final.name)}.*") if not _in_use(p)
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: OSError, where: str | Path | None = None) -> bool:
    """Whether ``exc`` means the disk (or quota) holding ``where`` is full.

    Most writes say so with ENOSPC; numpy's ``tofile`` (gguf-py's tensor writer) raises a bare
    "N requested and M written" instead, so a short write to a filesystem left with under 1 MiB
    free counts too.
    """
    if exc.errno in DISK_FULL:
        return True
    if exc.errno is not None or where is None:
        return False
    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def _disk_error(exc: OSError, where: Path) -> Exception:
    """A full disk or quota as one ``ResourceError`` line naming the folder; other errors unchanged."""
    if is_disk_full(exc, where.parent):
        from edgekit.errors import ResourceError

        return ResourceError(f"{where}: no space left on the device while writing ({exc.strerror or exc})")
    return exc


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
