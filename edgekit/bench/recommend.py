"""Pick the quantization level for a device: least quality loss that fits and is fast enough.

Speed is the measured decode rate when the benchmark ran on the device itself; otherwise it is
predicted from the target's memory bandwidth (roofline), and the recommendation says which.
"""

from __future__ import annotations

from typing import Any

from edgekit.plan import RUNTIME_OVERHEAD_BYTES, roofline_tokens_per_s
from edgekit.targets import TargetProfile


def predicted_speed(result: dict[str, Any], target: TargetProfile) -> float:
    """Roofline decode tokens/s on the target: its bandwidth ÷ (weights + KV bytes read per token).

    Weights read per token come from the harness (``weight_bytes_per_token``), else the file size;
    the KV cache is taken at the target's context length, so this is the speed at a full context.
    """
    weights = result.get("weight_bytes_per_token") or result["file_size_bytes"]
    per_token = weights + (result.get("kv_bytes") or 0)
    return roofline_tokens_per_s(target.hardware.memory_bandwidth_gbs, per_token)


def predicted_memory(result: dict[str, Any]) -> int:
    """Bytes the model needs: the measured peak RSS if known, else weights + KV + runtime overhead."""
    return int(
        result.get("peak_rss_bytes") or result["file_size_bytes"] + result.get("kv_bytes", 0) + RUNTIME_OVERHEAD_BYTES
    )


def _loss(result: dict[str, Any]) -> float:
    """Quality loss used for ranking: mean KL vs the fp model (smaller is better)."""
    return float(result.get("quality", {}).get("vs_fp", {}).get("mean_kl", float("inf")))


def recommend(results: dict[str, Any], target: TargetProfile, on_device: bool = False) -> dict[str, Any]:
    """The recommended result among ``results["results"]``, with a one-sentence reason."""
    basis = "measured" if on_device else "predicted"
    how = (
        "measured on the device"
        if on_device
        else f"predicted from the roofline of the target's {target.hardware.memory_bandwidth_gbs:g} GB/s memory"
    )
    budget = target.budget.memory_mb * 2**20
    floor = target.budget.min_decode_tokens_per_s
    candidates = []
    for r in results["results"]:
        if r.get("error"):
            continue
        speed = r["decode_tokens_per_s"]["median"] if on_device else predicted_speed(r, target)
        memory = predicted_memory(r)
        if memory <= budget and speed >= floor:
            candidates.append((r, speed, memory))
    if not candidates:
        return {
            "artifact": None,
            "quant": None,
            "basis": basis,
            "reason": f"no level fits {target.name}'s {target.budget.memory_mb:,.0f} MiB budget at ≥ {floor:g} "
            f"tokens/s, decode speed {how}",
        }
    best, speed, memory = min(candidates, key=lambda c: (_loss(c[0]), c[0]["file_size_bytes"]))
    within = f"within {target.name}'s {target.budget.memory_mb:,.0f} MiB budget and {floor:g} tokens/s floor"
    if _loss(best) == float("inf"):
        why = f"{best['quant']} is the smallest level {within} (no quality was measured to rank by)"
    else:
        kl = f"mean KL {_loss(best):.2e} nats/token vs the fp model"
        why = f"{best['quant']} has the least quality loss ({kl}) of the levels {within}"
    # A roofline figure is an upper bound (every weight read once per token at full bandwidth).
    pace = f"decodes {speed:,.0f}" if on_device else f"decodes at most about {speed:,.0f}"
    reason = f"{why}: it needs {memory / 2**20:,.0f} MiB and {pace} tokens/s, {how}"
    return {
        "artifact": best.get("bundle_path", best["artifact"]),
        "quant": best["quant"],
        "basis": basis,
        "reason": reason,
        "decode_tokens_per_s": speed,
        "memory_bytes": memory,
    }
