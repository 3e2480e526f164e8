"""The verification gate: an exported artifact is done only when it agrees with PyTorch.

The artifact runs through its own runtime on held-out text; the PyTorch fp32 model it came from is
the reference. Measured: mean KL(reference ‖ artifact) per token, top-1 agreement, perplexity
change, and tokenizer parity (identical token ids on a stress set). Thresholds come from the target
profile or, failing that, the level's defaults in ``edgekit.formats``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import VerificationError
from edgekit.export.stress import STRESS_TEXTS, stress_texts
from edgekit.quality import compare_logits_chunked


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
    reference_seconds: float = 0.0  # PyTorch reference pass (load, logits, release), shared by an export's levels
    runtime_seconds: float = 0.0  # the artifact's runtime in its child process (load, logits, token ids)

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


def tokenizer_cases(tokenizer, gguf: bool = False) -> list[tuple[str, bool, list[int]]]:
    """(text, parse_special, HF ids) the artifact's runtime must reproduce, as edgekit uses it.

    * user text (the stress set; ``parse_special`` off): special-token text in it is plain text, on
      both sides, so llama.cpp's habit of marking ordinary entries such as ``</s>`` as controls
      by their text cannot change what a prompt means (``gguf``: added tokens with those texts
      are controls in llama.cpp, so they are not parsed on the HF side either);
    * each HF added or special token on its own, special parsing on: it must be its one id;
    * the specials between words, parsed and without BOS, as a rendered chat template is tokenized.
    """
    from edgekit.export.gguf_tokenizer import LLAMA_CONTROL_TEXTS
    from edgekit.export.gguf_vocab_check import added_tokens, hf_ids

    plain = hf_ids(tokenizer, list(STRESS_TEXTS), LLAMA_CONTROL_TEXTS if gguf else (), add_special_tokens=True)
    cases = [(t, False, ids) for t, ids in zip(STRESS_TEXTS, plain, strict=True)]
    cases += [(t, True, [i]) for t, i in added_tokens(tokenizer)]
    specials = stress_texts(tokenizer)[len(STRESS_TEXTS) :]
    cases += [(t, True, list(tokenizer(t, add_special_tokens=False)["input_ids"])) for t in specials]
    return cases


def _labels(cases) -> list[str]:
    return [f"{'token' if parse else 'text'} {text[:40]!r}" for text, parse, _ in cases]


def artifact_side(
    artifact: str, rows: list[list[int]], cases: list[tuple[str, bool]], options: dict, tmp: str
) -> dict[str, Any]:
    """Run in a child process: the artifact's logits on ``rows`` (saved to ``tmp``) and its token ids.

    Plain-text cases add BOS as the runtime does for a prompt; token cases add nothing.
    """
    from edgekit.export.reference import write_rows
    from edgekit.runtime.detect import open_backend

    backend = open_backend(artifact, **options)
    try:
        out = Path(tmp) / "logits.npy"
        write_rows(out, (backend.logits(row) for row in rows), len(rows))  # a row at a time, not stacked
        ids = [backend.tokenize(t, add_special_tokens=not parse, parse_special=parse) for t, parse in cases]
        return {
            "logits": str(out),
            "ids": ids,
            "backend": backend.info.backend,
            "level": _level_of(Path(artifact), backend),
        }
    finally:
        backend.close()


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
    prepared=None,
) -> VerifyReport:
    """Compare ``artifact`` with the HF model at ``reference``; ``check=True`` raises on failure.

    ``threshold``: a Threshold, a function level -> Threshold (e.g. a target profile's
    ``verify.threshold``), or None for the level's defaults in ``edgekit.formats``. ``level``
    defaults to the sidecar's, else what the runtime reports. ``prepared``: the reference's rows
    and logits (``edgekit.export.reference.Reference``), computed once for several artifacts;
    without it they are computed here (and ``texts`` / ``max_tokens`` choose the rows).
    """
    from edgekit.export.reference import reference_for
    from edgekit.isolate import run_isolated

    if prepared is None:
        with reference_for(reference, texts=texts, max_tokens=max_tokens) as ref:
            return verify_artifact(
                artifact,
                reference,
                level=level,
                threshold=threshold,
                backend_options=backend_options,
                check=check,
                record=record,
                prepared=ref,
            )
    artifact = Path(artifact)
    cases = prepared.cases(gguf=artifact.is_file() and artifact.suffix == ".gguf")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-verify-") as tmp:
        # the runtime opens the fresh file in a child process: a C++ abort there is a NativeCrash
        # naming the file, not the end of edgekit
        side = run_isolated(
            artifact_side,
            str(artifact),
            prepared.rows.tolist(),
            [(text, parse) for text, parse, _ in cases],
            backend_options or {},
            tmp,
            path=artifact,
            action="verifying it in its runtime",
        )
        runtime_seconds = round(time.perf_counter() - started, 2)
        cmp = _compare(prepared, Path(side["logits"]))
    level = level or side["level"]
    mismatches = [
        label for (_, _, want), got, label in zip(cases, side["ids"], _labels(cases), strict=True) if got != want
    ]
    max_kl, min_top1 = _limits(level, threshold)
    report = VerifyReport(
        str(artifact),
        level,
        side["backend"],
        cmp.tokens,
        cmp.mean_kl,
        cmp.max_kl,
        cmp.top1,
        cmp.ppl_reference,
        cmp.ppl_candidate,
        max_kl,
        min_top1,
        not mismatches,
        mismatches,
        len(cases),
        reference_seconds=prepared.seconds,
        runtime_seconds=runtime_seconds,
    )
    if record:
        from edgekit.export.sidecar import sidecar_path, update_sidecar

        if sidecar_path(artifact).is_file():
            update_sidecar(artifact, verification=report.to_dict())
    if check and not report.passed:
        raise VerificationError(f"{artifact}: verification failed for {level}", report.table())
    return report


def _compare(prepared, candidate: Path):
    """Reference vs artifact logits (``.npy`` files), one row at a time (the artifact's padded vocab cut off)."""
    from edgekit.export.reference import read_row

    rows = prepared.rows.numpy()

    def chunks():
        for i in range(len(rows)):
            ref = prepared.row(i)
            yield ref[:-1], read_row(candidate, i)[:-1, : ref.shape[-1]], rows[i, 1:]

    return compare_logits_chunked(chunks())


def _limits(level: str, threshold) -> tuple[float, float]:
    """(max mean KL, min top-1) for ``level``: the caller's threshold, else the level's defaults."""
    from edgekit.formats import LEVELS

    if callable(threshold):
        threshold = threshold(level) if level in LEVELS else None
    if threshold is None:
        q = LEVELS.get(level)
        return (q.max_mean_kl, q.min_top1) if q else (1e-5, 0.99)
    return threshold.max_mean_kl, threshold.min_top1


REJECTED_SUFFIX = ".rejected"


def reject_artifact(artifact: str | Path) -> Path:
    """Move an artifact that failed verification off its final name: ``<name>.rejected``.

    Nothing that failed stays where a user or a later stage would take it for a good file; the
    sidecar (with the failed verification recorded) moves with it, for inspection. Returns the
    new path.
    """
    from edgekit.export.sidecar import sidecar_path

    artifact = Path(artifact)
    target = artifact.with_name(artifact.name + REJECTED_SUFFIX)
    if artifact.is_file() and sidecar_path(artifact).is_file():  # a folder's sidecar is inside it
        sidecar_path(artifact).replace(target.with_name(target.name + ".json"))
    if target.is_dir():  # left by an earlier rejected export of the same name
        import shutil

        shutil.rmtree(target)
    artifact.replace(target)
    return target
