"""Put a bench report's measurements in place of ``plan``'s predictions, and say which numbers are which.

A bench ``results.json`` (edgekit bench, docs/benchmarking.md) holds, per quantization level, the file
size, peak resident memory and decode speed measured on the machine that ran it. File size and memory
do not depend on where the model runs, so they always replace the predictions. Decode speed does: it
is used only when the report says it was measured on this target (``edgekit bench --target NAME
--on-device``, or ``--ssh``); otherwise it stays a calibrated prediction (edgekit.predict) from the
measured weight bytes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekit import predict
from edgekit.errors import InputError
from edgekit.plan import LevelPlan
from edgekit.targets import TargetProfile


def read_measurements(path: str | Path, model: str) -> dict[str, Any]:
    """A bench results file for ``model``; ``InputError`` naming the file when it is not one."""
    from edgekit.bench.schema import load_results

    data = load_results(path)  # checks the schema version and every field
    measured_model = data.get("model")
    if measured_model and not same_model(measured_model, model):
        raise InputError(path, f"measures model {measured_model}, not {model}")
    return data


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model (equal text, or the same folder)."""
    if a == b:
        return True
    if "demo" in (a, b):
        from edgekit.demo import cache_root

        other = Path(b if a == "demo" else a).expanduser().resolve()
        return other.is_relative_to(cache_root().resolve())
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def measured_on(results: dict[str, Any], target: TargetProfile) -> bool:
    """True when the report's speeds were measured on ``target`` itself (bench --target NAME --on-device)."""
    on_device = (results.get("recommendation") or {}).get("basis") == "measured"
    return on_device and results.get("target") == target.name


def apply_measurements(levels: list[LevelPlan], results: dict[str, Any], target: TargetProfile) -> list[LevelPlan]:
    """``levels`` with measured size/memory (and, measured on the target, speed) where a level was measured."""
    by_level = {r["quant"]: r for r in results["results"] if r.get("quant") and not r.get("error")}
    speed_measured = measured_on(results, target)
    return [
        _measured_level(lv, by_level[lv.level], target, speed_measured) if lv.level in by_level else lv for lv in levels
    ]


def _measured_level(lv: LevelPlan, r: dict[str, Any], target: TargetProfile, speed_measured: bool) -> LevelPlan:
    file_bytes = int(r.get("file_size_bytes") or lv.file_bytes)
    # peak RSS was taken at the bench's prompt lengths; the target's context may need a larger KV cache
    total = max(int(r.get("peak_rss_bytes") or 0), file_bytes + lv.kv_bytes + lv.overhead_bytes)
    median = (r.get("decode_tokens_per_s") or {}).get("median")
    if speed_measured and median:
        speed, basis = predict.measured(float(median), r.get("host") or target.name), "measured"
    else:  # the bench's count of weight bytes one decode step reads (embeddings are looked up, not read)
        weights = int(r.get("weight_bytes_per_token") or file_bytes)
        speed, basis = predict.decode(target, weights, lv.kv_bytes, lv.format), "measured size"
    return replace(
        lv,
        file_bytes=file_bytes,
        total_bytes=total,
        fits=total <= lv.budget_bytes,
        decode_tokens_per_s=speed.tokens_per_s,
        decode_low=speed.low,
        decode_high=speed.high,
        speed_note=speed.note,
        basis=basis,
    )
