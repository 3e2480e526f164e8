"""Speed on a target device, calibrated against published runs: the one model every command uses.

Decode is memory-bound: each new token reads every weight matrix once and the whole KV cache, so

    decode tokens/s = efficiency × peak bandwidth ÷ (weight bytes read + KV-cache bytes read) per token

where ``efficiency`` is the fraction of peak the runtime really reaches on that device class, fitted to
published llama-bench / Ollama runs (the profile's ``[calibration]`` table; bench/published_measurements.toml
holds the runs and bench/backtest_predictions.py checks the fit on devices it was not fitted to).
The range uses the lowest and highest efficiency among the calibration runs. Prefill is compute-bound:

    prefill tokens/s = effective GFLOP/s × 1e9 ÷ (2 × parameters)

A profile without ``[calibration]`` gets the bare roofline (efficiency 1), labelled as an upper bound.
A speed measured on the device itself always wins over any of this (``measured``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgekit.formats import LEVELS
from edgekit.plan import count_params, kv_cache_bytes
from edgekit.targets import TargetProfile

RUNTIME = {"gguf": "llama.cpp", "onnx": "ONNX Runtime GenAI"}
FLOPS_PER_PARAM_TOKEN = 2.0  # a forward pass: one multiply-add per weight per token (Kaplan et al. 2020)


@dataclass(frozen=True)
class Prediction:
    """A speed with its range and where it comes from; tokens/s."""

    tokens_per_s: float  # central figure: what decisions compare with the floor
    low: float
    high: float
    basis: str  # "calibrated" | "roofline" (uncalibrated upper bound) | "measured"
    note: str  # one line: how the figure was obtained

    def text(self) -> str:
        """``4.39 (4.05–4.70)``; a single figure when the range is a point (measured, or bare roofline)."""
        if self.low == self.high == self.tokens_per_s or self.basis == "measured":
            return sig3(self.tokens_per_s)
        return f"{sig3(self.tokens_per_s)} ({sig3(self.low)}–{sig3(self.high)})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sig3(value: float | None) -> str:
    """Three significant figures with thousands separators: 3365.9 -> "3,370", 4.386 -> "4.39"."""
    if value is None or value != value:  # None or NaN
        return "–"
    if value == 0:
        return "0"
    decimals = 2 - math.floor(math.log10(abs(value)))
    rounded = round(value, decimals)
    return f"{rounded:,.{max(0, decimals)}f}"


def efficiency(target: TargetProfile, fmt: str = "gguf") -> tuple[float, float, float] | None:
    """(central, low, high) fraction of peak bandwidth the format's runtime reaches; None if uncalibrated."""
    cal = target.calibration
    if cal is None:
        return None
    central, low, high = cal.decode_efficiency, cal.decode_efficiency_low, cal.decode_efficiency_high
    if fmt == "onnx" and cal.onnx_decode_efficiency is not None:
        scale = cal.onnx_decode_efficiency / central  # same spread around ORT's own figure
        return cal.onnx_decode_efficiency, min(1.0, low * scale), min(1.0, high * scale)
    return central, low, high


def roofline(bandwidth_gbs: float, bytes_per_token: float) -> float:
    """Tokens/s if every byte of a token's reads moved at full ``bandwidth_gbs`` (GB/s)."""
    return bandwidth_gbs * 1e9 / max(bytes_per_token, 1.0)


def decode(target: TargetProfile, weight_bytes: float, kv_bytes: float, fmt: str = "gguf") -> Prediction:
    """Decode tokens/s on ``target`` when a token reads ``weight_bytes`` of weights and ``kv_bytes`` of KV cache."""
    bandwidth = target.hardware.memory_bandwidth_gbs
    peak = roofline(bandwidth, weight_bytes + kv_bytes)
    eff = efficiency(target, fmt)
    runtime = RUNTIME.get(fmt, fmt)
    if eff is None:
        note = f"roofline of {bandwidth:g} GB/s (an upper bound: {target.name} has no [calibration])"
        return Prediction(peak, peak, peak, "roofline", note)
    central, low, high = eff
    cal = target.calibration
    onnx_own = fmt == "onnx" and cal.onnx_decode_efficiency is not None
    fitted = "" if fmt == "gguf" or onnx_own else " (llama.cpp's figure; none published for this runtime)"
    note = (
        f"{runtime} at {central:.0%} ({low:.0%}–{high:.0%}) of {bandwidth:g} GB/s{fitted}, "
        f"calibrated on {cal.calibrated_on}"
    )
    return Prediction(peak * central, peak * low, peak * high, "calibrated", note)


def prefill(target: TargetProfile, params: float) -> Prediction | None:
    """Prompt tokens/s from the profile's effective compute (None when the profile has no prefill figure)."""
    cal = target.calibration
    if cal is None or cal.prefill_gflops is None or params <= 0:
        return None
    speed = cal.prefill_gflops * 1e9 / (FLOPS_PER_PARAM_TOKEN * params)
    note = f"{cal.prefill_gflops:g} effective GFLOP/s ÷ 2 FLOPs per parameter, calibrated on {cal.calibrated_on}"
    return Prediction(speed, speed, speed, "calibrated", note)


def measured(tokens_per_s: float, where: str) -> Prediction:
    """A speed measured on the device: it replaces every prediction."""
    return Prediction(tokens_per_s, tokens_per_s, tokens_per_s, "measured", f"measured on the device ({where})")


def weight_bytes_per_token(config: Any, level: str) -> int:
    """Weight bytes one decode step reads at ``level``: the whole file less an untied input-embedding table.

    A token's embedding is a row lookup, not a read of the table; with tied embeddings the table is
    the output matrix and is read whole (the same rule as edgekit.bench.bandwidth for a GGUF file).
    """
    bits = LEVELS[level].bits_per_weight
    total = count_params(config) * bits / 8
    if not getattr(config, "tie_word_embeddings", False):
        total -= config.vocab_size * config.hidden_size * bits / 8
    return int(total)


def kv_shape_from_artifact(path: str | Path) -> SimpleNamespace | None:
    """Layers, KV heads and head size from a GGUF's metadata or an ONNX folder's genai_config/config.json.

    Returned in the attribute names of an HF config, so ``plan.kv_cache_bytes`` sizes it; None when the
    artifact does not say.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_shape(path)
    if path.is_dir():
        genai = path / "genai_config.json"
        if genai.is_file():
            d = json.loads(genai.read_text(encoding="utf-8")).get("model", {}).get("decoder", {})
            if {"num_hidden_layers", "num_key_value_heads", "head_size"} <= d.keys():
                return SimpleNamespace(
                    num_hidden_layers=d["num_hidden_layers"],
                    num_key_value_heads=d["num_key_value_heads"],
                    head_dim=d["head_size"],
                )
        if (path / "config.json").is_file():
            c = json.loads((path / "config.json").read_text(encoding="utf-8"))
            if {"num_hidden_layers", "num_attention_heads", "hidden_size"} <= c.keys():
                return SimpleNamespace(
                    num_hidden_layers=c["num_hidden_layers"],
                    num_key_value_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                    head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
                )
    return None


def _gguf_shape(path: Path) -> SimpleNamespace | None:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def value(key: str) -> int | None:
        field = fields.get(key)
        return None if field is None else int(field.contents())

    arch_field = fields.get("general.architecture")
    if arch_field is None:
        return None
    arch = arch_field.contents()
    layers, heads = value(f"{arch}.block_count"), value(f"{arch}.attention.head_count")
    embedding = value(f"{arch}.embedding_length")
    if layers is None or heads is None or embedding is None:
        return None
    kv_heads = value(f"{arch}.attention.head_count_kv") or heads
    head_dim = value(f"{arch}.attention.key_length") or embedding // heads
    return SimpleNamespace(num_hidden_layers=layers, num_key_value_heads=kv_heads, head_dim=head_dim)


def kv_bytes_for_artifact(path: str | Path, context: int) -> int | None:
    """KV-cache bytes at ``context`` tokens for the model in a GGUF file or ONNX folder (None: not stated)."""
    shape = kv_shape_from_artifact(path)
    return None if shape is None else kv_cache_bytes(shape, context)


def artifact_format(path: str | Path) -> str:
    """ "gguf" for a .gguf file, "onnx" otherwise (a folder of ONNX Runtime GenAI files)."""
    return "gguf" if Path(path).suffix == ".gguf" else "onnx"


def artifact_prediction(path: str | Path, target: TargetProfile, parameters: int | None = None) -> dict[str, Any]:
    """What the build records per artifact: decode (and prefill) on ``target`` at its full context.

    Weights read per token are counted from the file (edgekit.bench.bandwidth), the KV cache from the
    artifact's own metadata; tokens/s with its range, bytes, and how it was calibrated.
    """
    from edgekit.bench.bandwidth import weight_bytes_per_token

    context = target.budget.context_length
    weights = weight_bytes_per_token(path)
    kv = kv_bytes_for_artifact(path, context) or 0
    speed = decode(target, weights, kv, artifact_format(path))
    pre = prefill(target, parameters) if parameters else None
    return {
        "decode_tokens_per_s": speed.tokens_per_s,
        "decode_low_tokens_per_s": speed.low,
        "decode_high_tokens_per_s": speed.high,
        "basis": speed.basis,
        "note": speed.note,
        "prefill_tokens_per_s": pre.tokens_per_s if pre else None,
        "weight_bytes_per_token": weights,
        "kv_bytes": kv,
        "context": context,
    }
