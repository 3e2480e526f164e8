"""Pick the quantization level for a device: least quality loss that fits and is fast enough.

Speed is the measured decode rate when the benchmark ran on the device itself; otherwise it is the
calibrated prediction of ``edgekit.predict`` (the same model ``plan`` uses), and the recommendation
says which, with the prediction's range and how it was calibrated.
"""

from __future__ import annotations

from typing import Any

from edgekit import predict
from edgekit.plan import RUNTIME_OVERHEAD_BYTES
from edgekit.targets import TargetProfile


def predicted(result: dict[str, Any], target: TargetProfile) -> predict.Prediction:
    """Calibrated decode tokens/s on the target: weights + KV bytes read per token at its full context.

    Weights read per token come from the harness (``weight_bytes_per_token``), else the file size;
    the KV cache is the harness's ``kv_bytes`` at the target's context length.
    """
    weights = result.get("weight_bytes_per_token") or result["file_size_bytes"]
    fmt = result.get("format") or predict.artifact_format(result["artifact"])
    return predict.decode(target, weights, result.get("kv_bytes") or 0, fmt)


def predicted_speed(result: dict[str, Any], target: TargetProfile) -> float:
    """The central figure of :func:`predicted`, tokens/s."""
    return predicted(result, target).tokens_per_s


def predicted_memory(result: dict[str, Any]) -> int:
    """Bytes the model needs: the measured peak RSS if known, else weights + KV + runtime overhead."""
    return int(
        result.get("peak_rss_bytes") or result["file_size_bytes"] + result.get("kv_bytes", 0) + RUNTIME_OVERHEAD_BYTES
    )


def _loss(result: dict[str, Any]) -> float:
    """Quality loss used for ranking: mean KL vs the fp model (smaller is better)."""
    return float(result.get("quality", {}).get("vs_fp", {}).get("mean_kl", float("inf")))


def _speed(r: dict[str, Any], target: TargetProfile, on_device: bool) -> predict.Prediction:
    if on_device:
        return predict.measured(r["decode_tokens_per_s"]["median"], r.get("host") or target.name)
    return predicted(r, target)


def recommend(results: dict[str, Any], target: TargetProfile, on_device: bool = False) -> dict[str, Any]:
    """The recommended result among ``results["results"]``, with a one-sentence reason."""
    basis = "measured" if on_device else "predicted"
    budget = target.budget.memory_mb * 2**20
    floor = target.budget.min_decode_tokens_per_s
    candidates, speeds = [], []
    for r in results["results"]:
        if r.get("error"):
            continue
        speed = _speed(r, target, on_device)
        speeds.append(speed)
        memory = predicted_memory(r)
        if memory <= budget and speed.tokens_per_s >= floor:
            candidates.append((r, speed, memory))
    how = speeds[0].note if speeds else ("measured on the device" if on_device else "predicted")
    if not candidates:
        return {
            "artifact": None,
            "quant": None,
            "basis": basis,
            "reason": f"no level fits {target.name}'s {target.budget.memory_mb:,.0f} MiB budget at ≥ {floor:g} "
            f"tokens/s; decode speed {how}",
        }
    best, speed, memory = min(candidates, key=lambda c: (_loss(c[0]), c[0]["file_size_bytes"]))
    within = f"within {target.name}'s {target.budget.memory_mb:,.0f} MiB budget and {floor:g} tokens/s floor"
    if _loss(best) == float("inf"):
        why = f"{best['quant']} is the smallest level {within} (no quality was measured to rank by)"
    else:
        kl = f"mean KL {_loss(best):.3g} nats/token vs the fp model"
        why = f"{best['quant']} has the least quality loss ({kl}) of the levels {within}"
    pace = "decodes" if on_device else "is predicted to decode"
    reason = f"{why}: it needs {memory / 2**20:,.0f} MiB and {pace} {speed.text()} tokens/s ({speed.note})"
    return {
        "artifact": best.get("bundle_path", best["artifact"]),
        "quant": best["quant"],
        "basis": basis,
        "reason": reason,
        "decode_tokens_per_s": speed.tokens_per_s,
        "decode_low_tokens_per_s": speed.low,
        "decode_high_tokens_per_s": speed.high,
        "speed_note": speed.note,
        "memory_bytes": memory,
    }
