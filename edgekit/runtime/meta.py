"""Tokenizer facts a backend may not expose itself: end-of-sequence ids and GGUF metadata.

Backends can publish ``eos_token_ids`` / ``chat_template`` attributes (TorchBackend does); when one does
not, these readers recover the same facts from the files the model was loaded from, so ``EdgeModel``
stops at EOS and renders chats identically on every backend.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict:
    """A JSON object file, or ``{}`` when it is missing or unreadable (these files are optional)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=8)
def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """``{"chat_template", "bos_token", "eos_token", "eos_token_ids"}`` read from a GGUF header (what exists).

    The backend has validated the file before; any failure here only means "not available".
    """
    try:
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields
    except Exception:
        return {}
    tokens = fields.get("tokenizer.ggml.tokens")
    out: dict[str, Any] = {}
    if "tokenizer.chat_template" in fields:
        out["chat_template"] = fields["tokenizer.chat_template"].contents()
    eos_ids = []
    for key, name in (("tokenizer.ggml.bos_token_id", "bos_token"), ("tokenizer.ggml.eos_token_id", "eos_token")):
        if key in fields:
            token_id = int(fields[key].contents())
            if tokens is not None and token_id < len(tokens.data):
                out[name] = tokens.contents(token_id)
            if name == "eos_token":
                eos_ids.append(token_id)
    if "tokenizer.ggml.eot_token_id" in fields:  # end-of-turn for chat models
        eos_ids.append(int(fields["tokenizer.ggml.eot_token_id"].contents()))
    out["eos_token_ids"] = sorted(set(eos_ids))
    return out


def folder_eos_ids(folder: Path) -> list[int]:
    """EOS ids from ``generation_config.json`` (may list several), else ``config.json``."""
    for name in ("generation_config.json", "config.json"):
        eos = read_json(folder / name).get("eos_token_id")
        if eos is not None:
            return [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    return []


def eos_ids_of(backend: Any) -> list[int]:
    """The ids that end a generation for ``backend``: its own attribute, ModelInfo.extra, then its files."""
    ids = getattr(backend, "eos_token_ids", None)
    if ids is None:
        ids = backend.info.extra.get("eos_token_ids")
    if ids is None and "eos_token_id" in backend.info.extra:
        ids = [backend.info.extra["eos_token_id"]]
    if ids is not None:
        return [int(i) for i in ids]
    path = Path(backend.info.path)
    if path.is_file() and path.suffix != ".onnx":
        return list(gguf_metadata(path).get("eos_token_ids", []))
    return folder_eos_ids(path if path.is_dir() else path.parent)
