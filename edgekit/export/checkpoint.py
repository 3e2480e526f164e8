"""A model folder's safetensors weights, read one tensor (or one block of rows) at a time.

Exporters that write a tensor at a time need the weights without loading the model: this reads the
tensor table from the headers (one file, or shards listed by ``model.safetensors.index.json``), checks
every file against its header before anything is read (a truncated download is one ``InputError``
naming the file), and hands out rows through ``safetensors.safe_open`` (memory-mapped). Each read opens
the file and closes it again, so the pages a tensor touched leave this process's RSS with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import InputError

INDEX = "model.safetensors.index.json"  # transformers' name for the shard index of a sharded checkpoint
FLOAT_DTYPES = ("F32", "F16", "BF16")  # safetensors dtype names of the floating-point weights exporters convert


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lives and what it is: file, safetensors dtype name (``BF16``), shape."""

    file: Path
    dtype: str
    shape: tuple[int, ...]


class Checkpoint:
    """The tensors of a folder's ``*.safetensors`` files (all of them, or those its shard index lists)."""

    def __init__(self, folder: str | Path):
        from edgekit.runtime.safetensors_check import check_safetensors

        self.folder = Path(folder)
        self.tensors: dict[str, StoredTensor] = {}
        for file in checkpoint_files(self.folder):
            for name, entry in check_safetensors(file).items():
                self.tensors[name] = StoredTensor(file, entry["dtype"], tuple(entry["shape"]))

    def read(self, name: str, rows: slice | None = None):
        """The tensor (or ``rows`` of it, along its first axis) as a torch tensor in its stored dtype."""
        from safetensors import safe_open

        stored = self.tensors[name]
        try:
            with safe_open(str(stored.file), "pt") as fh:
                view = fh.get_slice(name)
                data = view[rows] if rows is not None else view[:]
                del view  # the slice keeps the mapping open; the data is a copy
        except Exception as exc:  # safetensors raises its own types for unreadable files
            raise InputError(stored.file, f"cannot read tensor {name!r} ({exc})") from None
        return data

    def row_blocks(self, name: str, max_elements: int) -> Iterator:
        """The tensor in blocks of whole rows (first axis), each at most ``max_elements`` (at least one row)."""
        shape = self.tensors[name].shape
        if len(shape) < 2:
            yield self.read(name)
            return
        per_row = max(1, math.prod(shape[1:]))
        step = max(1, max_elements // per_row)
        for start in range(0, shape[0], step):
            yield self.read(name, slice(start, min(start + step, shape[0])))


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards its index lists, else every ``*.safetensors``."""
    index = folder / INDEX
    if not index.is_file():
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise InputError(folder, "no *.safetensors weights (edgekit loads safetensors only)")
        return files
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(index, f"not a shard index with a weight_map ({exc.__class__.__name__})") from None
    files = []
    for name in names:
        path = folder / str(name)
        if Path(str(name)).name != str(name):
            raise InputError(index, f"shard {name!r} is not a file name in the model folder")
        if not path.is_file():
            raise InputError(path, f"shard listed in {INDEX} is missing")
        files.append(path)
    return files
