"""The verification gate: an exported artifact is done only when it agrees with PyTorch.

The artifact runs through its own runtime on held-out text; the PyTorch fp32 model it came from is
the reference. Measured: mean KL(reference ‖ artifact) per token, top-1 agreement, perplexity
change, and tokenizer parity (identical token ids on a stress set). Thresholds come from the target
profile or, failing that, the level's defaults in ``edgekit.formats``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import VerificationError
from edgekit.export.stress import stress_texts
from edgekit.quality import compare_logits


@dataclass
class VerifyReport:
    artifact: str
    level: str
    backend: str
    tokens: int
    mean_kl: float
    max_kl: float
    top1: float
    ppl_reference: float
    ppl_artifact: float
    max_mean_kl: float
    min_top1: float
    tokenizer_parity: bool
    tokenizer_mismatches: list[str] = field(default_factory=list)
    tokenizer_texts: int = 0  # stress texts compared

    @property
    def ppl_change(self) -> float:
        return self.ppl_artifact / self.ppl_reference - 1.0

    @property
    def passed(self) -> bool:
        return self.tokenizer_parity and self.mean_kl <= self.max_mean_kl and self.top1 >= self.min_top1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ppl_change": self.ppl_change, "passed": self.passed}

    def table(self) -> str:
        rows = [
            (
                "mean KL (nats/token)",
                f"{self.mean_kl:.3e}",
                f"<= {self.max_mean_kl:.3e}",
                self.mean_kl <= self.max_mean_kl,
            ),
            ("top-1 agreement", f"{self.top1:.4f}", f">= {self.min_top1:.4f}", self.top1 >= self.min_top1),
            ("perplexity change", f"{self.ppl_change:+.2%}", "(reported)", True),
            (
                "tokenizer parity",
                f"{self.tokenizer_texts - len(self.tokenizer_mismatches)}/{self.tokenizer_texts}",
                "all",
                self.tokenizer_parity,
            ),
        ]
        lines = [f"{'check':24} {'measured':>12} {'required':>14}  result"]
        lines += [f"{name:24} {value:>12} {need:>14}  {'pass' if ok else 'FAIL'}" for name, value, need, ok in rows]
        return "\n".join(lines)


def _level_of(artifact: Path, backend) -> str:
    from edgekit.export.sidecar import read_sidecar, sidecar_path

    if sidecar_path(artifact).is_file():
        return read_sidecar(artifact)["quantization"]
    return backend.info.quantization


def reference_rows(tokenizer, texts: list[str] | None, max_tokens: int, seq_len: int = 256):
    """Held-out token rows [n, seq] covering about ``max_tokens`` tokens."""
    from edgekit.data import heldout_set

    seq_len = min(seq_len, max_tokens)
    n = max(1, max_tokens // seq_len)
    return heldout_set(tokenizer, seq_len, n, docs=texts)


def verify_artifact(
    artifact: str | Path,
    reference: str | Path,
    *,
    level: str | None = None,
    threshold=None,
    texts: list[str] | None = None,
    max_tokens: int = 1024,
    backend_options: dict | None = None,
    check: bool = False,
    record: bool = True,
) -> VerifyReport:
    """Compare ``artifact`` with the HF model at ``reference``; ``check=True`` raises on failure.

    ``threshold``: a Threshold, a function level -> Threshold (e.g. a target profile's
    ``verify.threshold``), or None for the level's defaults in ``edgekit.formats``. ``level``
    defaults to the sidecar's, else what the runtime reports.
    """
    import torch

    from edgekit.formats import LEVELS
    from edgekit.models import load_model, load_tokenizer
    from edgekit.runtime.detect import open_backend

    artifact = Path(artifact)
    model, tokenizer = load_model(reference), load_tokenizer(reference)
    backend = open_backend(artifact, **(backend_options or {}))
    try:
        level = level or _level_of(artifact, backend)
        rows = reference_rows(tokenizer, texts, max_tokens)
        with torch.no_grad():
            ref = model(input_ids=rows).logits.float().numpy()
        cand = np.stack([backend.logits(row.tolist()) for row in rows])
        targets = rows[:, 1:].reshape(-1).numpy()
        vocab = ref.shape[-1]
        cmp = compare_logits(ref[:, :-1].reshape(-1, vocab), cand[:, :-1, :vocab].reshape(-1, vocab), targets)
        texts_checked = stress_texts(tokenizer)
        mismatches = [t for t in texts_checked if backend.tokenize(t) != tokenizer(t)["input_ids"]]
        backend_name = backend.info.backend
    finally:
        backend.close()
    if callable(threshold):
        threshold = threshold(level) if level in LEVELS else None
    if threshold is None:
        q = LEVELS.get(level)
        max_kl, min_top1 = (q.max_mean_kl, q.min_top1) if q else (1e-5, 0.99)
    else:
        max_kl, min_top1 = threshold.max_mean_kl, threshold.min_top1
    report = VerifyReport(
        str(artifact),
        level,
        backend_name,
        cmp.tokens,
        cmp.mean_kl,
        cmp.max_kl,
        cmp.top1,
        cmp.ppl_reference,
        cmp.ppl_candidate,
        max_kl,
        min_top1,
        not mismatches,
        [repr(t[:40]) for t in mismatches],
        len(texts_checked),
    )
    if record:
        from edgekit.export.sidecar import sidecar_path, update_sidecar

        if sidecar_path(artifact).is_file():
            update_sidecar(artifact, verification=report.to_dict())
    if check and not report.passed:
        raise VerificationError(f"{artifact}: verification failed for {level}", report.table())
    return report
