"""Validate a safetensors file before any loader maps it.

A safetensors file is ``u64 little-endian header length N`` + ``N bytes of JSON`` + one data buffer.
Every tensor entry names a dtype, a shape and ``data_offsets`` [begin, end) into the buffer. A truncated
download or a random file must give one clear ``InputError`` naming the file and what is wrong, never a
crash deep inside a loader, so this module reads only the header and checks it against the file size.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from edgekit.errors import InputError

# Bytes per element of each dtype the format defines (safetensors spec, "Dtype" enum).
DTYPE_BYTES = {
    "BOOL": 1,  # stored as one byte per value
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,  # complex64: two float32
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation refuses larger headers too
_LEN_BYTES = 8


def check_safetensors(path: str | Path) -> dict[str, dict]:
    """Check one ``.safetensors`` file; return its tensor table ``{name: {dtype, shape, data_offsets}}``.

    Raises ``InputError(path, problem)`` for an empty, truncated or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "safetensors file not found")
    size = path.stat().st_size
    if size < _LEN_BYTES:
        raise InputError(path, f"not a safetensors file: {size} bytes, expected at least 8 (header length)")
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(_LEN_BYTES))
        if header_len > MAX_HEADER_BYTES or header_len > size - _LEN_BYTES:
            raise InputError(
                path,
                f"not a safetensors file or truncated: header claims {header_len} bytes, "
                f"file has {size - _LEN_BYTES} after the length field",
            )
        raw = fh.read(header_len)
    header = _parse_header(path, raw)
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    _check_entries(path, tensors, buffer_bytes=size - _LEN_BYTES - header_len)
    return tensors


def _parse_header(path: Path, raw: bytes) -> dict:
    """The JSON header as a dict; ``InputError`` if it is not UTF-8 JSON object text."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a safetensors file: header is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise InputError(path, "not a safetensors file: header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise InputError(path, "safetensors __metadata__ is not a JSON object")
    return header


def _check_entries(path: Path, tensors: dict, buffer_bytes: int) -> None:
    """Each entry's dtype/shape/offsets agree, and together they tile the data buffer exactly."""
    spans = []
    for name, entry in tensors.items():
        begin, end = _entry_span(path, name, entry)
        spans.append((begin, end, name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            raise InputError(path, f"tensor {name!r} starts at byte {begin}, expected {cursor} (gap or overlap)")
        cursor = end
    if cursor != buffer_bytes:
        what = "truncated" if cursor > buffer_bytes else "has trailing bytes"
        raise InputError(path, f"file {what}: tensors need {cursor} data bytes, file holds {buffer_bytes}")


def _entry_span(path: Path, name: str, entry: object) -> tuple[int, int]:
    """[begin, end) of one tensor after checking its dtype and shape fit its byte range."""
    if not isinstance(entry, dict):
        raise InputError(path, f"tensor {name!r}: entry is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise InputError(path, f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputError(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or offsets[1] < offsets[0]
    ):
        raise InputError(path, f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end] with begin <= end")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise InputError(
            path,
            f"tensor {name!r}: {dtype} {shape} needs {expected} bytes, data_offsets give {offsets[1] - offsets[0]}",
        )
    return offsets[0], offsets[1]


def check_safetensors_folder(folder: str | Path) -> list[Path]:
    """Check every ``*.safetensors`` file of a model folder; ``InputError`` if there is none.

    Refusing folders without safetensors keeps pickle checkpoints (``*.bin``, ``*.pt``) from ever loading.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are refused)" if pickles else ""
        raise InputError(folder, f"no *.safetensors weights in the model folder{hint}")
    for file in files:
        check_safetensors(file)
    return files


def check_loading_info(path: str | Path, info: dict) -> None:
    """Refuse a model whose weights did not all load: ``info`` is transformers' ``output_loading_info``.

    transformers fills a missing weight with a random initialisation and only logs a warning, so a
    folder with one tensor renamed would otherwise run and produce fluent nonsense with exit code 0.
    """
    problems = []
    for key, what in (
        ("missing_keys", "missing"),
        ("unexpected_keys", "unexpected"),
        ("mismatched_keys", "wrong shape"),
    ):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{len(names)} {what} weight(s): {', '.join(names[:3])}{more}")
    if problems:
        raise InputError(path, "weights do not match the model's architecture: " + "; ".join(problems))
