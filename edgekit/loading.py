"""How a user's model is fetched and loaded: Hub revision, cache folder, remote code, dtype.

The CLI's ``--revision``, ``--cache-dir``, ``--trust-remote-code`` and ``--dtype`` apply to the
model the user named, wherever in a command it is loaded (teacher, reference), and to nothing the
command derives from it (a student is trained in float32 whatever the teacher was loaded in).
``using(sources, options)`` records them for the duration of a command; ``edgekit.models``' loaders
look them up by the name or path they are given, so no stage needs a new argument to honour them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, Problem

# --dtype name -> torch dtype attribute; float32 is edgekit's default (verification compares against fp32).
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


@dataclass(frozen=True)
class LoadOptions:
    revision: str | None = None  # Hub branch, tag or commit; ignored for local folders
    cache_dir: Path | None = None  # Hub download cache; default: huggingface_hub's
    trust_remote_code: bool = False  # run the model repository's own Python code
    dtype: str = "float32"  # one of DTYPES

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError([Problem("--dtype", self.dtype, f"not one of {', '.join(DTYPES)}")])

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, DTYPES[self.dtype])

    def hub_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` (only those that differ from the defaults)."""
        kwargs: dict[str, Any] = {}
        if self.revision:
            kwargs["revision"] = self.revision
        if self.cache_dir:
            kwargs["cache_dir"] = str(self.cache_dir)
        return kwargs


DEFAULT = LoadOptions()
_ACTIVE: ContextVar[dict[str, LoadOptions]] = ContextVar("edgekit_load_options", default={})  # noqa: B039


def _key(name_or_path: str | Path) -> str:
    """Hub ids as given; local paths resolved, so ``./m`` and ``/abs/m`` are one model."""
    path = Path(str(name_or_path)).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def options_for(name_or_path: str | Path) -> LoadOptions:
    """The options the user gave for this model, or the defaults."""
    return _ACTIVE.get().get(_key(name_or_path), DEFAULT)


@contextlib.contextmanager
def using(sources: Iterable[str | Path | None], options: LoadOptions) -> Iterator[None]:
    """Apply ``options`` to every load of ``sources`` (and their resolved folders) inside the block."""
    active = dict(_ACTIVE.get())
    for source in sources:
        if source is not None:
            active[_key(source)] = options
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
