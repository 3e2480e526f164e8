"""The PyTorch side of verification, computed once and shared by every artifact of an export.

Verifying N levels used to load the fp32 model N times and keep it alive while each runtime child
loaded its artifact: 5 GB + the child for a 1 B model, per level. Here the reference model is
loaded once in its checkpoint precision (``edgekit.lowmem``: bf16 resident, fp32 arithmetic, the
same logits as the fp32 model), its logits on the held-out rows are written to a float32 ``.npy``
file one row at a time, and the model is released before any runtime opens an artifact.
Comparisons then read the logits back row by row from the memory-mapped file.

    with reference_for(model_dir, max_tokens=1024) as ref:
        for path in paths:
            verify_artifact(path, model_dir, prepared=ref)
"""

from __future__ import annotations

import contextlib
import gc
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Reference:
    """Held-out rows, the fp model's logits on them (a file), and the tokenizer, for verification."""

    source: str  # the reference model's folder or Hub id
    rows: Any  # torch.LongTensor [n, seq]: the held-out token rows
    logits_path: Path  # float32 .npy [n, seq, vocab]
    tokenizer: Any
    seconds: float  # wall time of the reference pass (load + forward + release), s
    max_tokens: int
    texts: list[str] | None = None
    _cases: dict[bool, list] = field(default_factory=dict, repr=False)

    def logits(self) -> np.ndarray:
        """The reference logits [n, seq, vocab], memory-mapped (read on access; pages stay mapped)."""
        return np.load(self.logits_path, mmap_mode="r")

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` of the reference logits [seq, vocab], copied out of a mapping that is then closed."""
        return read_row(self.logits_path, i)

    def cases(self, gguf: bool) -> list[tuple[str, bool, list[int]]]:
        """The tokenizer cases (``edgekit.export.verify.tokenizer_cases``) for a GGUF or other artifact."""
        from edgekit.export.verify import tokenizer_cases

        if gguf not in self._cases:
            self._cases[gguf] = tokenizer_cases(self.tokenizer, gguf=gguf)
        return self._cases[gguf]


def write_rows(path: str | Path, rows: Iterator[np.ndarray], n: int) -> Path:
    """Write ``n`` float32 arrays of one shape as one ``.npy`` [n, *shape], one at a time.

    Plain writes, not a memory map: a mapping's written pages would stay in the process's RSS.
    """
    with open(path, "wb") as fh:
        for i, row in enumerate(rows):
            row = np.ascontiguousarray(row, dtype=np.float32)
            if i == 0:  # the header needs the shape, known from the first row
                header = {"descr": "<f4", "fortran_order": False, "shape": (n, *row.shape)}
                np.lib.format.write_array_header_2_0(fh, header)
            fh.write(row.tobytes())
            del row
    return Path(path)


def read_row(path: str | Path, i: int) -> np.ndarray:
    """Row ``i`` of a 3-D ``.npy`` file, as a copy: the file's pages are unmapped again at once, so
    reading every row of a 0.5 GB file one by one never holds more than one row in memory."""
    mapped = np.load(path, mmap_mode="r")
    row = np.array(mapped[i])
    del mapped  # the last reference: the mapping is closed here
    return row


def prepare_reference(
    reference: str | Path, workdir: str | Path, *, texts: list[str] | None = None, max_tokens: int = 1024
) -> Reference:
    """Load ``reference`` once (bounded), write its logits on the held-out rows under ``workdir``, release it.

    Memory: the model in its checkpoint precision + one fp32 unit + one row's activations and
    logits; the logits file takes rows x seq x vocab x 4 bytes on disk (0.5 GB for 1024 tokens of
    a 128k vocabulary).
    """
    import torch

    from edgekit.export.verify import reference_rows
    from edgekit.lowmem import fp32_compute, load_resident, release
    from edgekit.models import load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(reference)
    rows = reference_rows(tokenizer, texts, max_tokens)
    model = load_resident(reference)
    path = Path(workdir) / "reference-logits.npy"
    try:
        with torch.no_grad(), fp32_compute(model):
            rows_out = (model(input_ids=row[None]).logits[0].float().numpy() for row in rows)
            write_rows(path, rows_out, len(rows))
    finally:
        release(model)  # before any runtime child opens an artifact
        del model
        gc.collect()
    seconds = round(time.perf_counter() - started, 2)
    return Reference(str(reference), rows, path, tokenizer, seconds, max_tokens, texts)


@contextlib.contextmanager
def reference_for(
    reference: str | Path, *, texts: list[str] | None = None, max_tokens: int = 1024, workdir: str | Path | None = None
) -> Iterator[Reference]:
    """``prepare_reference`` in a temporary folder (inside ``workdir`` if given) removed on exit."""
    with tempfile.TemporaryDirectory(prefix="edgekit-reference-", dir=workdir) as tmp:
        yield prepare_reference(reference, tmp, texts=texts, max_tokens=max_tokens)
