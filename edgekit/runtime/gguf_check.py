"""Validate a GGUF file with the ``gguf`` reader before llama.cpp maps it.

llama.cpp trusts the file's tensor table; a truncated or corrupt file can crash the whole process.
Reading the header and tensor table in Python and checking every tensor's extent against the file
size turns that into a one-line InputError; ``gguf_model_check`` then checks the metadata llama.cpp
would assert on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.runtime.gguf_model_check import check_model_fields

_KEYS = {"general.architecture": "architecture", "general.file_type": "file_type"}


def check_gguf(path: str | Path) -> dict[str, Any]:
    """Check ``path`` and return a few facts (architecture, file_type, context_length, parameters)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    size = path.stat().st_size
    if size < 24:
        raise InputError(path, f"not a GGUF file ({size} bytes, too short for a header)")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise InputError(path, "not a GGUF file (bad magic)")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError/IndexError/struct errors on damage
        raise InputError(path, f"corrupt or truncated GGUF file ({type(exc).__name__}: {exc})") from None
    facts: dict[str, Any] = {"parameters": 0}
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise InputError(path, f"truncated: tensor {tensor.name} ends at byte {end:,} but the file has {size:,}")
        facts["parameters"] += int(tensor.n_elements)
    model = check_model_fields(path, reader)  # hyperparameters, vocabulary, tensors: what llama.cpp asserts on
    for key, field in reader.fields.items():
        if key in _KEYS or key == "tokenizer.chat_template":
            facts[_KEYS.get(key, "chat_template")] = _value(field)
    facts["context_length"] = model["context_length"]
    facts["n_vocab"] = model["n_vocab"]
    return facts


def _value(field) -> Any:
    import gguf

    part = field.parts[field.data[0]]
    if field.types and field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    return part.tolist()[0] if hasattr(part, "tolist") else part
