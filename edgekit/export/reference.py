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
        """The reference logits, memory-mapped (read on access, not held in memory)."""
        return np.load(self.logits_path, mmap_mode="r")

    def cases(self, gguf: bool) -> list[tuple[str, bool, list[int]]]:
        """The tokenizer cases (``edgekit.export.verify.tokenizer_cases``) for a GGUF or other artifact."""
        from edgekit.export.verify import tokenizer_cases

        if gguf not in self._cases:
            self._cases[gguf] = tokenizer_cases(self.tokenizer, gguf=gguf)
        return self._cases[gguf]


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
    out = None
    try:
        with torch.no_grad(), fp32_compute(model):
            for i, row in enumerate(rows):
                logits = model(input_ids=row[None]).logits[0].float().numpy()
                if out is None:
                    shape = (len(rows), *logits.shape)
                    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
                out[i] = logits
                del logits
        out.flush()
    finally:
        del out
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
