"""The architecture registry: one ``Family`` per HF ``model_type``, looked up from a config.

Stages ask :func:`family_of` instead of branching on ``model_type``. Adding a family is one module
in this package and one line in ``_MODULES`` (see docs/adding-a-family.md).

Teachers need only a forward pass, so any causal LM transformers loads can be a teacher; this
registry governs what edgekit builds students of, prunes and exports.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekit.arch.base import Family, head_dim, keep_layers, kv_rows, layer_types, q_rows, rope_theta
from edgekit.arch.shapes import (
    count_params,
    decode_bytes_per_token,
    kv_cache_bytes,
    params_read_per_token,
    tensor_shapes,
)
from edgekit.errors import UnsupportedModelError

# One module per family; each defines FAMILIES = (Family(...), ...).
_MODULES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "smollm3", "granite", "olmo2")

REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family under its model_type (once)."""
    if family.model_type in REGISTRY:
        raise ValueError(f"family {family.model_type!r} registered twice")
    REGISTRY[family.model_type] = family
    return family


for _name in _MODULES:
    for _family in importlib.import_module(f"edgekit.arch.{_name}").FAMILIES:
        register(_family)


def supported() -> tuple[str, ...]:
    """Registered model_types, in registration order."""
    return tuple(REGISTRY)


def family_of(config: Any, source: Any = None) -> Family:
    """The family of a HF config, or UnsupportedModelError naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in REGISTRY:
        where = f"{source}: " if source is not None else ""
        raise UnsupportedModelError(
            f"{where}architecture {model_type!r} is not supported for students, pruning or export "
            f"(any causal LM can still be a teacher); supported: {', '.join(REGISTRY)}"
        )
    return REGISTRY[model_type]


def params_of(config: Any) -> int:
    """Exact parameter count of a config of a registered family."""
    return count_params(family_of(config), config)


__all__ = [
    "REGISTRY",
    "Family",
    "count_params",
    "decode_bytes_per_token",
    "family_of",
    "head_dim",
    "keep_layers",
    "kv_cache_bytes",
    "kv_rows",
    "layer_types",
    "params_of",
    "params_read_per_token",
    "q_rows",
    "register",
    "rope_theta",
    "supported",
    "tensor_shapes",
]
