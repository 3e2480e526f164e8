"""Quantize a GGUF file with llama.cpp's own quantizer (through llama-cpp-python's C API).

Passes the importance matrix, per-tensor type overrides and provenance metadata as the C structs
``llama_model_quantize_params`` expects; each array is NULL-terminated.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from edgekit.errors import BackendUnavailable, StageError
from edgekit.fileio import atomic_path

# edgekit level -> llama_ftype (llama.h, enum llama_ftype)
FTYPES = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q8_0": 7,
    "Q3_K_M": 12,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "BF16": 32,
}
_KV_INT, _KV_STR = 0, 3  # LLAMA_KV_OVERRIDE_TYPE_INT / _STR


_SILENT = []  # keeps the C callback alive for the life of the process


def _llama():
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailable("llama-cpp-python is needed to quantize GGUF: pip install llama-cpp-python") from exc
    if not _SILENT:  # llama.cpp logs every tensor to stderr; edgekit reports what matters itself
        _SILENT.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
        llama_cpp.llama_log_set(_SILENT[0], ctypes.c_void_p(0))
    return llama_cpp


def _imatrix_array(lib, imatrix: dict[str, np.ndarray], keep: list):
    entries = (lib.llama_model_imatrix_data * (len(imatrix) + 1))()
    for i, (name, values) in enumerate(sorted(imatrix.items())):
        data = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(data)
        entries[i].name = name.encode()
        entries[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = data.size
    return entries


def _overrides_array(lib, overrides: dict[str, str]):
    import gguf

    entries = (lib.llama_model_tensor_override * (len(overrides) + 1))()
    for i, (pattern, type_name) in enumerate(overrides.items()):
        entries[i].pattern = pattern.encode()
        entries[i].type = int(gguf.GGMLQuantizationType[type_name.upper()])
    return entries


def _kv_array(lib, metadata: dict[str, str | int]):
    """Metadata written into the output file; llama.cpp's fields hold 127 bytes, longer strings are cut."""
    entries = (lib.llama_model_kv_override * (len(metadata) + 1))()
    for i, (key, value) in enumerate(metadata.items()):
        entries[i].key = key.encode()[:127]
        if isinstance(value, int):
            entries[i].tag = _KV_INT
            entries[i].value.val_i64 = value
        else:
            entries[i].tag = _KV_STR
            entries[i].value.val_str = str(value).encode()[:127]
    return entries


def check_overrides(overrides: dict[str, str]) -> None:
    """Raise one ConfigError naming every bad pattern or type in per-tensor overrides."""
    import re

    import gguf

    from edgekit.errors import ConfigError, Problem

    problems = []
    known = [t.name for t in gguf.GGMLQuantizationType]
    for pattern, type_name in overrides.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(Problem("export", f"tensor_type {pattern}", f"not a regular expression ({exc})"))
        if type_name.upper() not in known:
            problems.append(
                Problem("export", f"tensor_type {pattern}", f"unknown type {type_name!r}; e.g. Q8_0, Q6_K, F16")
            )
    if problems:
        raise ConfigError(problems)


def keep_output_overrides(keep: str | None) -> dict[str, str]:
    """Overrides that store the output and token-embedding matrices as GGML type ``keep`` (e.g. Q8_0)."""
    return {r"^output\.weight$": keep, r"^token_embd\.weight$": keep} if keep else {}


def quantize_gguf(
    src: Path,
    dst: Path,
    level: str,
    *,
    imatrix: dict[str, np.ndarray] | None = None,
    type_overrides: dict[str, str] | None = None,
    metadata: dict[str, str | int] | None = None,
    threads: int | None = None,
) -> Path:
    """Quantize ``src`` (F32/F16 GGUF) to ``level`` at ``dst``, atomically."""
    lib = _llama()
    if level not in FTYPES:
        raise StageError("quantize", f"unknown level {level!r}; known: {', '.join(FTYPES)}")
    params = lib.llama_model_quantize_default_params()
    params.ftype = FTYPES[level]
    params.nthread = threads or os.cpu_count() or 1
    keep: list = []  # arrays must outlive the call
    if imatrix:
        params.imatrix = _imatrix_array(lib, imatrix, keep)
    if type_overrides:
        params.tt_overrides = _overrides_array(lib, type_overrides)
    if metadata:
        params.kv_overrides = _kv_array(lib, metadata)
    with atomic_path(dst) as tmp:
        status = lib.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            _raise_if_disk_full(dst.parent, src)
            raise StageError("quantize", f"llama.cpp could not quantize {src} to {level} (status {status})")
    return dst


def _raise_if_disk_full(folder: Path, src: Path) -> None:
    """llama.cpp reports a failed write as status 1; say "disk full" when that is the likely reason."""
    import shutil

    from edgekit.errors import ResourceError

    free = shutil.disk_usage(folder).free
    if free < src.stat().st_size:
        raise ResourceError(f"{folder}: no space left to quantize {src.name} ({free / 2**20:.0f} MiB free)")
