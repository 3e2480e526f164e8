"""Back-test edgekit's speed prediction against published device runs: predicted ÷ published, per run.

    python bench/backtest_predictions.py            # the table, the error summary, the fitted figures
    python bench/backtest_predictions.py --check    # exit 1 if a shipped profile's [calibration] differs from the fit

Runs and devices come from bench/published_measurements.toml. For each device class (the shipped
profile it maps to), the ``calibration`` runs fit the decode efficiency (median, and the lowest and
highest, of published tokens/s × predicted bytes per token ÷ peak bandwidth) and the prefill compute
(median of published prompt tokens/s × 2 × parameters). Every run, calibration and held-out, is then
predicted through ``edgekit.predict`` with the shipped profile (its bandwidth replaced by the run's
device), using the same parameter and KV arithmetic ``edgekit plan`` uses for a config.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from edgekit import predict
from edgekit.plan import count_params, kv_cache_bytes
from edgekit.targets import TargetProfile, load_target

DATA = Path(__file__).with_name("published_measurements.toml")
EFFICIENCY_DECIMALS = 2  # profiles carry efficiencies to 1 %
# A range is at least ±MIN_HALF_WIDTH of its central figure, so one or two calibration runs do not give a
# near-zero range: 0.10 is about the median |predicted ÷ published − 1| on held-out devices (this back-test).
MIN_HALF_WIDTH = 0.10
# Profiles with no published run of their own borrow the figures of a profile of the same device class.
BORROWED = {"jetson-orin-nano": "jetson-agx-orin"}


@dataclass
class Run:
    model: str
    level: str
    device: str
    device_name: str
    profile: str
    bandwidth_gbs: float
    split: str
    runtime: str
    context: int
    decode: float  # published tokens/s
    prefill: float | None
    source: str
    config: SimpleNamespace | None  # None: ``weight_bytes`` (the published file size) stands for the reads
    weight_bytes: int | None = None
    kv_bytes: int = 0  # with ``weight_bytes``: the KV bytes read per token, when the run states them
    format: str = "gguf"  # "onnx": an ONNX Runtime GenAI run, fitting ``onnx_decode_efficiency``

    @property
    def weights(self) -> float:
        if self.config is None:
            return float(self.weight_bytes)
        return predict.weight_bytes_per_token(self.config, self.level)

    @property
    def kv(self) -> float:
        return self.kv_bytes if self.config is None else kv_cache_bytes(self.config, self.context)

    @property
    def bytes_per_token(self) -> float:
        return self.weights + self.kv

    @property
    def efficiency(self) -> float:
        """Fraction of peak bandwidth the published run reached, by edgekit's count of bytes read."""
        return self.decode * self.bytes_per_token / (self.bandwidth_gbs * 1e9)

    @property
    def prefill_gflops(self) -> float | None:
        if self.prefill is None or self.config is None:
            return None
        return self.prefill * predict.FLOPS_PER_PARAM_TOKEN * count_params(self.config) / 1e9


def load_runs(path: Path = DATA) -> list[Run]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    models = {name: SimpleNamespace(model_type="llama", **fields) for name, fields in data["models"].items()}
    runs = []
    for r in data["runs"]:
        device = data["devices"][r["device"]]
        runs.append(
            Run(
                r["model"],
                r["level"],
                r["device"],
                device["name"],
                device["profile"],
                device["memory_bandwidth_gbs"],
                r["split"],
                r["runtime"],
                r["context"],
                r["decode_tokens_per_s"],
                r.get("prefill_tokens_per_s"),
                r["source"],
                models.get(r["model"]),
                r.get("weight_bytes"),
                r.get("kv_bytes", 0),
                r.get("format", "gguf"),
            )
        )
    return runs


def fit(runs: list[Run]) -> dict[str, dict]:
    """Per profile: the [calibration] figures its calibration runs give."""
    fitted = {}
    for profile in sorted({r.profile for r in runs}):
        both = [r for r in runs if r.profile == profile and r.split == "calibration"]
        cal = [r for r in both if r.format == "gguf"]
        onnx = [r.efficiency for r in both if r.format == "onnx"]
        if not cal:
            continue
        eff = [r.efficiency for r in cal]
        gflops = [g for g in (r.prefill_gflops for r in cal) if g is not None]
        central = statistics.median(eff)
        low, high = min(min(eff), central * (1 - MIN_HALF_WIDTH)), max(max(eff), central * (1 + MIN_HALF_WIDTH))
        fitted[profile] = {
            "decode_efficiency": round(central, EFFICIENCY_DECIMALS),
            "decode_efficiency_low": round(low, EFFICIENCY_DECIMALS),
            "decode_efficiency_high": round(min(high, 1.0), EFFICIENCY_DECIMALS),
            "prefill_gflops": float(predict.sig3(statistics.median(gflops)).replace(",", "")) if gflops else None,
            "onnx_decode_efficiency": round(statistics.median(onnx), EFFICIENCY_DECIMALS) if onnx else None,
            "devices": sorted({r.device_name for r in cal}),
        }
    return fitted


def on_device(profile: TargetProfile, bandwidth_gbs: float) -> TargetProfile:
    """The profile with the run's device bandwidth (its calibration unchanged)."""
    hardware = profile.hardware.model_copy(update={"memory_bandwidth_gbs": bandwidth_gbs})
    return profile.model_copy(update={"hardware": hardware})


def predictions(runs: list[Run]) -> list[tuple[Run, predict.Prediction, predict.Prediction | None]]:
    out = []
    for r in runs:
        target = on_device(load_target(r.profile), r.bandwidth_gbs)
        decode = predict.decode(target, r.weights, r.kv, r.format)
        prefill = None
        if r.prefill is not None and r.config is not None:
            prefill = predict.prefill(target, count_params(r.config))
        out.append((r, decode, prefill))
    return out


def _errors(ratios: list[float]) -> str:
    if not ratios:
        return "none"
    dev = [abs(x - 1) for x in ratios]
    return f"n={len(dev)}, median |pred/pub − 1| {statistics.median(dev):.0%}, worst {max(dev):.0%}"


def report(runs: list[Run]) -> str:
    rows = predictions(runs)
    lines = [
        "| split | device | model | level | runtime | published tok/s | predicted (range) | pred ÷ pub | efficiency |",
        "|:--|:--|:--|:--|:--|--:|--:|--:|--:|",
    ]
    for r, d, _ in rows:
        lines.append(
            f"| {r.split} | {r.device_name} | {r.model} | {r.level} | {r.runtime} | {predict.sig3(r.decode)} | "
            f"{d.text()} | {d.tokens_per_s / r.decode:.2f} | {r.efficiency:.2f} |"
        )
    prefill = [(r, p) for r, _, p in rows if p is not None]
    if prefill:
        lines += [
            "",
            "| split | device | model | level | published pp tok/s | predicted | pred ÷ pub |",
            "|:--|:--|:--|:--|--:|--:|--:|",
        ]
        for r, p in prefill:
            lines.append(
                f"| {r.split} | {r.device_name} | {r.model} | {r.level} | {predict.sig3(r.prefill)} | "
                f"{p.text()} | {p.tokens_per_s / r.prefill:.2f} |"
            )
    lines.append("")
    for split in ("calibration", "held-out"):
        ratios = [d.tokens_per_s / r.decode for r, d, _ in rows if r.split == split]
        lines.append(f"decode, {split}: {_errors(ratios)}")
    return "\n".join(lines)


def check(runs: list[Run]) -> list[str]:
    """Differences between each shipped profile's [calibration] and what its calibration runs give."""
    problems = []
    fitted_all = fit(runs)
    for profile, lender in BORROWED.items():
        fitted_all[profile] = fitted_all[lender]
    for profile, fitted in fitted_all.items():
        cal = load_target(profile).calibration
        if cal is None:
            problems.append(f"{profile}: no [calibration], fit gives {fitted}")
            continue
        keys = ("decode_efficiency", "decode_efficiency_low", "decode_efficiency_high", "prefill_gflops")
        for key in (*keys, "onnx_decode_efficiency"):
            if getattr(cal, key) != fitted[key]:
                problems.append(f"{profile}: {key} is {getattr(cal, key)}, the fit gives {fitted[key]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped profiles with the fit")
    args = parser.parse_args(argv)
    runs = load_runs()
    if args.check:
        problems = check(runs)
        print("\n".join(problems) or "every shipped [calibration] matches the fit")
        return 1 if problems else 0
    print(report(runs))
    print("\nfitted [calibration] per profile:")
    for profile, fitted in fit(runs).items():
        print(f"  {profile}: {fitted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
