"""Quality of an artifact on held-out text: perplexity, and KL / top-1 against the fp student and teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def reference_logits(model_dir: str | Path, rows) -> np.ndarray:
    """PyTorch fp32 logits [rows, seq, vocab] of a HF folder."""
    import torch

    from edgekit.models import load_model

    model = load_model(model_dir)
    with torch.no_grad():
        return model(input_ids=rows).logits.float().numpy()


def measure_quality(
    artifact: str | Path,
    student: str | Path | None,
    teacher: str | Path | None,
    tokens: int,
    options: dict | None = None,
) -> dict[str, Any]:
    """ppl of the artifact; KL, top-1 and ppl change vs the fp student and vs the teacher (when given)."""
    from edgekit.export.verify import reference_rows
    from edgekit.models import load_tokenizer
    from edgekit.quality import compare_logits, perplexity
    from edgekit.runtime.detect import open_backend

    tokenizer_source = student or teacher
    if tokenizer_source is None or tokens <= 0:
        return {}
    rows = reference_rows(load_tokenizer(tokenizer_source), None, tokens)
    backend = open_backend(artifact, **(options or {}))
    try:
        cand = np.stack([backend.logits(r.tolist()) for r in rows])
    finally:
        backend.close()
    targets = rows[:, 1:].reshape(-1).numpy()
    vocab = cand.shape[-1]
    flat = cand[:, :-1].reshape(-1, vocab)
    out: dict[str, Any] = {"tokens": len(targets), "ppl": perplexity(flat, targets)}
    for name, source in (("vs_fp", student), ("vs_teacher", teacher)):
        if source is not None:
            ref = reference_logits(source, rows)[:, :-1, :vocab].reshape(-1, vocab)
            out[name] = compare_logits(ref, flat, targets).to_dict()
    return out
