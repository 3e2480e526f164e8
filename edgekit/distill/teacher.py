"""The distillation teacher's precision: what ``edgekit distill --dtype`` means for the teacher.

The teacher only runs forward passes, so it need not be held in fp32 to compute in fp32:

* ``auto`` (default): the teacher stays in its checkpoint precision (``edgekit.lowmem``: a bf16 or
  fp16 checkpoint stays 2 bytes/parameter) and every forward computes in float32 one decoder layer
  at a time. Upcasting bf16 to fp32 is exact, so the soft targets are the fp32 teacher's, bit for
  bit, at half its memory. An fp32 checkpoint is loaded in fp32 as before.
* ``float32``: the teacher's weights in fp32 (4 bytes/parameter), the previous default.
* ``bfloat16`` / ``float16``: weights *and* arithmetic in that type (faster on CPUs with bf16
  matrix units, not exact). Measured KL(fp32 teacher ‖ bf16 teacher) of the soft targets at the
  default T = 2 (``TEACHER_BF16_KL``) is far below the KL a student reaches, so it is a fair choice
  when speed matters more than bit-exact targets.

The student is trained in float32 whatever the teacher's precision (``distill.student``).
Memory of one CPU distillation step at each choice is measured in docs/distillation.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")

# Measured mean KL(fp32 teacher ‖ bf16-arithmetic teacher) of soft targets at T = 2, nats/token, on
# held-out rows of the built-in corpus (docs/distillation.md "Teacher precision"; 2-core x86 CPU
# with AMX-bf16). The demo teachers' fp32 weights are rounded to bf16 as well; the sized models'
# checkpoints are bf16, so only the arithmetic differs. Random-weight sized models are nearly
# uniform (entropy 11.7 of 11.76 nats), which makes their top-K sets fragile, not their KL large.
TEACHER_BF16_KL = {
    "demo teacher, hidden 128, 4 layers (fp32 checkpoint)": 3.8e-6,
    "demo teacher, hidden 256, 4 layers (fp32 checkpoint)": 3.9e-6,
    "Llama-3 shape, 0.25 B weights (bf16 checkpoint, random weights)": 6.3e-6,
    "Llama-3.2-1B shape, 1.24 B weights (bf16 checkpoint, random weights)": 1.2e-4,
}


def load_teacher(name_or_path: str | Path, dtype: str = "auto") -> Any:
    """The teacher model at ``dtype`` (one of TEACHER_DTYPES; see the module docstring).

    Memory: ``auto`` holds the checkpoint's precision (2 bytes/parameter for bf16) plus, while a
    forward runs, one layer (or the embedding/head) in fp32; ``float32`` holds 4 bytes/parameter.
    """
    import torch

    from edgekit.lowmem import load_resident
    from edgekit.models import load_model

    if dtype not in TEACHER_DTYPES:
        raise ValueError(f"teacher dtype {dtype!r}; choose from {', '.join(TEACHER_DTYPES)}")
    if dtype == "auto":
        return load_resident(name_or_path)
    return load_model(name_or_path, dtype=getattr(torch, dtype))


@contextlib.contextmanager
def teacher_compute(model: Any, dtype: str = "auto") -> Iterator[Any]:
    """Inside the block the teacher's forward passes compute in fp32 (``auto``), else as loaded."""
    if dtype != "auto":
        yield model
        return
    from edgekit.lowmem import fp32_compute

    with fp32_compute(model):
        yield model
