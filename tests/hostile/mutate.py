"""Ways to damage a good artifact, as a careless tool or a hostile user would (test helpers only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_DROP = object()


def rewrite_gguf(
    src: Path,
    dst: Path,
    fields: dict[str, Any] | None = None,
    drop_tensors: tuple[str, ...] = (),
) -> Path:
    """Copy ``src`` to ``dst`` with some key/values changed (``(value, GGUFValueType)``, or DROP) or tensors left out.

    The result is a well-formed GGUF file (header, alignment and offsets right): only its content lies.
    """
    import gguf

    fields = fields or {}
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in fields:
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), main, sub_type=sub)
    for key, spec in fields.items():
        if spec is _DROP:
            continue
        value, vtype, *sub = spec
        writer.add_key_value(key, value, vtype, sub_type=sub[0] if sub else None)
    for tensor in reader.tensors:
        if tensor.name in drop_tensors:
            continue
        data = np.asarray(tensor.data)
        writer.add_tensor(
            tensor.name, data, raw_shape=list(reversed([int(d) for d in tensor.shape])), raw_dtype=tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


DROP = _DROP


def flip_bytes(path: Path, offset: int, count: int) -> None:
    """Invert ``count`` bytes at ``offset`` in place (the file keeps its size)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = bytearray(fh.read(count))
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def replace_once(path: Path, old: bytes, new: bytes) -> None:
    """Replace the first occurrence of ``old`` with ``new`` (same length) in place."""
    assert len(old) == len(new)
    raw = path.read_bytes()
    at = raw.index(old)
    path.write_bytes(raw[:at] + new + raw[at + len(old) :])
