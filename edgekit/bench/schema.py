"""The results JSON, as a versioned schema (docs/benchmarking.md describes every field).

``schema_version`` changes whenever a field is renamed, removed or changes meaning; new optional
fields do not change it. Readers call ``load_results``, which names the file and what is wrong, so
a report is never drawn from a file it misreads. Units are in the field names (bytes, s, tokens/s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekit.errors import InputError

RESULTS_SCHEMA = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Summary(_Strict):
    """Repeated measurements: median and spread (p10/p90, min/max) over ``n`` kept runs; NaN when n is 0."""

    median: float
    p10: float
    p90: float
    min: float
    max: float
    n: int


class Comparison(_Strict):
    """Artifact vs a reference on the same held-out tokens (edgekit.quality.Comparison)."""

    tokens: int
    mean_kl: float
    max_kl: float
    top1: float
    max_abs_logit_diff: float
    ppl_reference: float
    ppl_candidate: float
    ppl_change: float


class Quality(_Strict):
    tokens: int | None = None
    ppl: float | None = None
    vs_fp: Comparison | None = None
    vs_teacher: Comparison | None = None


class Measurement(_Strict):
    """One artifact that ran (``fits`` False: it ran, but its peak RSS exceeded the budget)."""

    artifact: str
    backend: str
    format: str
    quant: str
    file_size_bytes: int
    parameters: int
    n_ctx: int
    threads: int | None = None
    load_time_s: Summary
    peak_rss_bytes: int
    os_max_rss_bytes: int
    ttft_s: Summary
    prompt_tokens: dict[str, int]  # suite prompt length -> tokens actually used (clipped to the context)
    prefill_tokens_per_s: dict[str, Summary]  # keyed by the suite's prompt length
    decode_tokens_per_s: Summary
    decode_tokens: int  # median tokens generated (fewer than requested when the model emitted EOS)
    decode_tokens_requested: int
    gpu_memory_bytes: int | None = None
    gpu_memory_method: str | None = None
    weight_bytes_per_token: int
    kv_bytes_measured: int
    roofline_fraction: float | None
    kv_bytes: int | None = None  # at the target's context length
    predicted_decode_tokens_per_s: float | None = None  # calibrated, on the target at its full context
    predicted_decode_low: float | None = None  # range of that prediction (edgekit.predict)
    predicted_decode_high: float | None = None
    predicted_basis: str | None = None  # "calibrated" or "roofline" (profile without [calibration])
    predicted_note: str | None = None  # how it was calibrated
    predicted_prefill_tokens_per_s: float | None = None  # from the target's effective compute
    quality: Quality
    fits: bool
    fit_note: str | None = None
    host: str | None = None  # set by the SSH runner
    rounds: int  # fresh child processes pooled into the summaries
    runs: dict[str, Any]  # the kept values per round: {metric: [[round 1 values], [round 2 values], ...]}


class Failure(_Strict):
    """An artifact that did not run; ``fits`` False means "does not fit", None means another failure."""

    artifact: str
    error: str
    fits: bool | None = None
    quant: str | None = None
    host: str | None = None


class Host(_Strict):
    machine: str
    system: str
    cpus: int | None
    memory_bytes: int
    python: str
    bandwidth_gbs: float
    gpu_bandwidth_gbs: float | None = None
    remote_bandwidth_gbs: float | None = None  # the target's nominal bandwidth, for runs over SSH


class Recommendation(_Strict):
    artifact: str | None
    quant: str | None
    basis: Literal["measured", "predicted"]
    reason: str
    decode_tokens_per_s: float | None = None
    decode_low_tokens_per_s: float | None = None  # range of a prediction (equal when measured)
    decode_high_tokens_per_s: float | None = None
    speed_note: str | None = None  # how the speed was obtained
    memory_bytes: int | None = None


class Results(_Strict):
    schema_version: Literal[1]
    suite: str
    suite_settings: dict[str, Any]
    target: str | None
    target_budget: dict[str, Any] | None = None  # the target profile's [budget] table
    limited_to_target: bool
    gpu: bool
    remote_host: str | None = None  # user@host of an SSH run; None: measured on this host
    model: str | None
    teacher: str | None
    host: Host
    results: list[Measurement | Failure]
    recommendation: Recommendation | None = None


def validate_results(payload: dict[str, Any], source: str | Path = "results") -> Results:
    """``payload`` checked against the schema; ``InputError`` naming ``source`` and every bad field."""
    version = payload.get("schema_version")
    if version != RESULTS_SCHEMA:
        raise InputError(source, f"results schema_version {version!r}; this edgekit reads version {RESULTS_SCHEMA}")
    try:
        return Results.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InputError(source, f"not a valid results file ({problems})") from None


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json; returns the plain dict the report functions take."""
    from edgekit.fileio import read_json

    payload = read_json(path)
    validate_results(payload, path)
    return payload
