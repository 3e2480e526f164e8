"""edgekit: take a large language model and ship a small, fast, faithful one to an edge device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.errors import (
    BackendUnavailable,
    ConfigError,
    EdgekitError,
    InputError,
    StageError,
    UnsupportedModelError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "EdgekitError",
    "InputError",
    "StageError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
    "load",
]

if TYPE_CHECKING:
    from edgekit.runtime.api import EdgeModel


def load(path: Any, **kwargs: Any) -> EdgeModel:
    """Load an exported artifact, HF folder or bundle: see ``edgekit.runtime.api.load``."""
    from edgekit.runtime.api import load as _load

    return _load(path, **kwargs)
