"""Time and peak memory of each stage against model size, beside llama.cpp's own route.

Each stage runs as its own process (the edgekit CLI, or llama.cpp's converter / quantizer) while
``bench/rss.py`` samples the RSS of its whole process tree every 0.1 s; stages run one at a time
under the heavy-job lock (``/tmp/edgekit-heavy.lock``), which is released for others after the first
stage that ends more than 150 s after it was taken.
Beside each measurement the bench records edgekit's own estimate of that stage's peak
(``edgekit.resources``, what preflight and ``edgekit plan`` use) and the ratio measured/estimated,
so the estimates are checked on every run.

Models: ``bench/sized_models.py`` (Llama-3-shaped, random bf16 weights, the real tokenizer).
llama.cpp's route: its ``convert_hf_to_gguf.py`` (from the llama-cpp-python sdist, the version in
the venv) with ``--outtype bf16``, then Q4_K_M with ``edgekit.export.quantize.quantize_gguf``,
which calls llama.cpp's own quantizer.

    python bench/bench_sizes.py --model /work/models/llama-1b --llama-cpp /tmp/llama.cpp \\
        --stages all --work /tmp/size-bench/work
    python bench/bench_sizes.py --table        # rewrite bench/results-sizes.md from the JSON

Results merge into bench/results-sizes.json keyed by (model, stage), so sizes and stages can be run
one at a time.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "bench"))

from rss import run_measured  # noqa: E402

from edgekit import resources  # noqa: E402

RESULTS = _ROOT / "bench" / "results-sizes.json"
TABLE = _ROOT / "bench" / "results-sizes.md"
LOCK = Path("/tmp/edgekit-heavy.lock")
GB = 1e9


@dataclass(frozen=True)
class Stage:
    """A command to measure and the estimate (bytes, from the model's config) it is checked against."""

    name: str
    command: Callable[[Path, Path, Path | None], list[str]]  # (model, workdir, llama.cpp dir) -> argv
    estimate: Callable[[object], int | None]
    what: str


def _edgekit(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgekit", *args]


def _export(model: Path, work: Path, *flags: str) -> list[str]:
    return _edgekit("export", str(model), "--out", str(work / "export"), *flags)


def _gguf_peak(levels: list[str], imatrix: bool, allocate: str, verify: int | None):
    return lambda c: (
        resources.gguf_export(
            c, levels, imatrix_used=imatrix, allocate=allocate, verify_tokens=verify
        ).peak.memory_bytes
    )


def _verify_peak(c) -> int:
    return max(resources.verify_reference(c, 1024).memory_bytes, resources.verify(c, "Q4_K_M", 1024, 4096).memory_bytes)


def _written(work: Path, level: str) -> Path:
    """The file an earlier export stage wrote at ``level`` (named after the model, or the demo's name)."""
    found = sorted((work / "export").glob(f"*-{level}.gguf"))
    return found[0] if found else work / "export" / f"missing-{level}.gguf"


def _student(c, layers: int = 4):
    s = copy.deepcopy(c)
    s.num_hidden_layers = layers
    return s


def _quantize_cmd(work: Path) -> list[str]:
    code = (
        "import sys; from edgekit.export.quantize import quantize_gguf; "
        "quantize_gguf(sys.argv[1], sys.argv[2], 'Q4_K_M')"
    )
    return [sys.executable, "-c", code, str(work / "llamacpp-bf16.gguf"), str(work / "llamacpp-Q4_K_M.gguf")]


STAGES = [
    Stage(
        "llama.cpp convert bf16",
        lambda m, w, lc: [
            sys.executable,
            str(lc / "convert_hf_to_gguf.py"),
            str(m),
            "--outtype",
            "bf16",
            "--outfile",
            str(w / "llamacpp-bf16.gguf"),
        ],
        lambda c: None,
        "llama.cpp's convert_hf_to_gguf.py --outtype bf16",
    ),
    Stage(
        "llama.cpp quantize Q4_K_M",
        lambda m, w, lc: _quantize_cmd(w),
        # the quantizer alone: a Python with numpy and llama_cpp only (the runtime child's size), not the CLI's
        lambda c: (
            resources.gguf_quantize(c, "Q4_K_M").memory_bytes
            - resources.CONST["python_base"]
            + resources.CONST["runtime_child_base"]
        ),
        "llama.cpp's quantizer on its BF16 file (no imatrix)",
    ),
    Stage(
        "export write+quantize",
        lambda m, w, lc: _export(m, w, "--quant", "Q4_K_M", "--imatrix", "none", "--allocate", "none", "--no-verify"),
        _gguf_peak(["Q4_K_M"], False, "none", None),
        "edgekit export --quant Q4_K_M --imatrix none --allocate none --no-verify",
    ),
    Stage(
        "export +imatrix",
        lambda m, w, lc: _export(m, w, "--quant", "Q4_K_M", "--allocate", "none", "--no-verify"),
        _gguf_peak(["Q4_K_M"], True, "none", None),
        "edgekit export --quant Q4_K_M --allocate none --no-verify",
    ),
    Stage(
        "export +imatrix +allocation",
        lambda m, w, lc: _export(m, w, "--quant", "Q4_K_M", "--allocate", "fisher", "--no-verify"),
        _gguf_peak(["Q4_K_M"], True, "fisher", None),
        "edgekit export --quant Q4_K_M --allocate fisher --no-verify (auto keeps llama.cpp's mix above 100 M weights)",
    ),
    Stage(
        "verify Q4_K_M",
        lambda m, w, lc: _edgekit("verify", str(_written(w, "Q4_K_M")), "--reference", str(m)),
        _verify_peak,
        "edgekit verify (1,024 held-out tokens) of the file written by the stage before",
    ),
    Stage(
        "export default",
        lambda m, w, lc: _export(m, w, "--quant", "Q8_0,Q4_K_M"),
        _gguf_peak(["Q8_0", "Q4_K_M"], True, "auto", 1024),
        "edgekit export --quant Q8_0,Q4_K_M (defaults: imatrix, allocate auto, verification)",
    ),
    Stage(
        "onnx int4",
        lambda m, w, lc: _edgekit(
            "export", str(m), "--format", "onnx", "--quant", "int4", "--no-verify", "--out", str(w / "onnx")
        ),
        lambda c: resources.onnx_export(c, "int4").memory_bytes,
        "edgekit export --format onnx --quant int4 --no-verify",
    ),
    Stage(
        "prune",
        lambda m, w, lc: _edgekit("prune", str(m), "--ffn", "0.25", "--out", str(w / "pruned")),
        lambda c: resources.prune(c).memory_bytes,
        "edgekit prune --ffn 0.25 (activation importance on 16 rows, surgery, save)",
    ),
    Stage(
        "distill 2 steps",
        lambda m, w, lc: _edgekit(
            "distill",
            str(m),
            "--student-layers",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--seq-len",
            "128",
            "--max-rows",
            "16",
            "--eval-every",
            "0",
            "--out",
            str(w / "distilled"),
        ),
        lambda c: resources.distill_step(c, _student(c), 2, 128).memory_bytes,
        "edgekit distill --student-layers 4 --steps 2 --batch-size 2 --seq-len 128",
    ),
]


class HeavyLock:
    """The heavy-job lock, held across consecutive stages for at most ``hold_s`` seconds in a row (so
    a short stage does not queue behind every other session's job again), then released. The wait
    for it is not measured."""

    def __init__(self, hold_s: float = 150.0):
        self.hold_s, self._fh, self._since = hold_s, None, 0.0

    def acquire(self) -> None:
        if self.hold_s < 0:  # --no-lock: a model small enough to run beside other work (the demo)
            return
        if self._fh is not None and time.monotonic() - self._since < self.hold_s:
            return
        self.release()
        LOCK.touch(exist_ok=True)
        self._fh = open(LOCK)  # noqa: SIM115 - held across calls, closed in release()
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        self._since = time.monotonic()

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


LOCKED = HeavyLock()


def measure(stage: Stage, model: Path, work: Path, llama_cpp: Path | None, timeout_note: str = "") -> dict:
    from edgekit.models import load_config

    config = load_config(model)
    cmd = stage.command(model, work, llama_cpp)
    env = {**os.environ, "PYTHONPATH": f"{_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = work / f"{stage.name.replace(' ', '_').replace('+', 'p')}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {model.name}: {stage.name}: {' '.join(cmd)}", flush=True)
    LOCKED.acquire()
    with open(log, "w") as out:
        m = run_measured(cmd, stdout=out, stderr=out, env=env)
    estimate = stage.estimate(config)
    bf16 = resources.source_bytes(model) or 0
    row = {
        "model": model.name,
        "model_path": str(model),
        "params": resources.Sizes.of(config).params,
        "bf16_bytes": bf16,
        "stage": stage.name,
        "what": stage.what,
        "rc": m.rc,
        "wall_s": round(m.wall_s, 1),
        "peak_rss_bytes": m.peak_rss_bytes,
        "root_hwm_bytes": m.root_hwm_bytes,
        "peak_over_bf16": round(m.peak_rss_bytes / bf16, 2) if bf16 else None,
        "estimate_bytes": estimate,
        "measured_over_estimate": round(m.peak_rss_bytes / estimate, 2) if estimate else None,
        "log_tail": log.read_text(errors="replace").strip().splitlines()[-3:] if m.rc else [],
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(
        f"    rc {m.rc}, {m.wall_s:.1f} s, peak {m.peak_rss_bytes / GB:.2f} GB"
        + (f", estimate {estimate / GB:.2f} GB (ratio {row['measured_over_estimate']})" if estimate else ""),
        flush=True,
    )
    return row


def _load() -> dict:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"machine": {}, "runs": []}


def _save(data: dict) -> None:
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def record(row: dict) -> None:
    """Merge ``row`` into the JSON (two bench processes may run: the file is locked while rewritten)."""
    with open(RESULTS.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        _record(row)


def _record(row: dict) -> None:
    data = _load()
    data["machine"] = {
        "cpu_count": os.cpu_count(),
        "memory_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "note": "shared 2-core, 24 GiB machine (other sessions run beside it); peak = process-tree RSS every 0.1 s",
    }
    data["runs"] = [r for r in data["runs"] if (r["model"], r["stage"]) != (row["model"], row["stage"])] + [row]
    _save(data)


def reestimate(data: dict) -> dict:
    """Recompute every row's estimate and ratio with the current ``edgekit.resources`` (the formulas
    may have changed since the row was measured)."""
    from edgekit.models import load_config

    stages = {s.name: s for s in STAGES}
    for r in data["runs"]:
        path = Path(r.get("model_path") or f"/work/models/{r['model']}")
        if r["stage"] not in stages or not path.exists():
            continue
        estimate = stages[r["stage"]].estimate(load_config(path))
        r["estimate_bytes"] = estimate
        r["measured_over_estimate"] = round(r["peak_rss_bytes"] / estimate, 2) if estimate else None
    return data


def table(data: dict) -> str:
    """Markdown: one row per (model, stage), measured beside estimated, in model-size order."""
    lines = [
        "| model | stage | wall s | peak RSS GB | × bf16 size | estimate GB | measured ÷ estimate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    order = {s.name: i for i, s in enumerate(STAGES)}
    for r in sorted(data["runs"], key=lambda r: (r["params"], order.get(r["stage"], 99))):
        est = f"{r['estimate_bytes'] / GB:.2f}" if r.get("estimate_bytes") else "-"
        ratio = f"{r['measured_over_estimate']:.2f}" if r.get("measured_over_estimate") else "-"
        status = "" if r["rc"] == 0 else f" (rc {r['rc']})"
        lines.append(
            f"| {r['model']} ({r['bf16_bytes'] / GB:.2f} GB) | {r['stage']}{status} | {r['wall_s']:.0f} | "
            f"{r['peak_rss_bytes'] / GB:.2f} | {r['peak_over_bf16']:.2f} | {est} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, action="append", default=[], help="A model folder (repeatable).")
    ap.add_argument("--stages", default="all", help="Comma-separated stage names (see --list), or all.")
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp source folder holding convert_hf_to_gguf.py.")
    ap.add_argument("--work", type=Path, default=Path("/tmp/size-bench/work"), help="Scratch folder.")
    ap.add_argument(
        "--max-estimate-gb", type=float, default=None, help="Skip stages whose estimate exceeds this (shared machines)."
    )
    ap.add_argument("--hold-s", type=float, default=150.0, help="Keep the heavy lock across stages this long.")
    ap.add_argument("--no-lock", action="store_true", help="Do not take the heavy lock (only for the demo-sized).")
    ap.add_argument("--list", action="store_true", help="List the stages.")
    ap.add_argument(
        "--table", action="store_true", help="Re-estimate with the current formulas, rewrite the markdown table."
    )
    args = ap.parse_args(argv)
    LOCKED.hold_s = -1.0 if args.no_lock else args.hold_s
    if args.table:
        with open(RESULTS.with_suffix(".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _save(reestimate(_load()))
        TABLE.write_text(table(_load()))
        print(TABLE.read_text())
        return 0
    if args.list:
        for s in STAGES:
            print(f"{s.name:30} {s.what}")
        return 0
    names = [s.name for s in STAGES] if args.stages == "all" else [n.strip() for n in args.stages.split(",")]
    unknown = [n for n in names if n not in {s.name for s in STAGES}]
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; see --list")
    for model in args.model:
        work = args.work / model.name
        work.mkdir(parents=True, exist_ok=True)
        from edgekit.models import load_config

        config = load_config(model)
        for stage in (s for s in STAGES if s.name in names):
            estimate = stage.estimate(config)
            if args.max_estimate_gb and estimate and estimate > args.max_estimate_gb * GB:
                print(f"{model.name}: {stage.name}: skipped, estimate {estimate / GB:.1f} GB", flush=True)
                continue
            if stage.name.startswith("llama.cpp convert") and not args.llama_cpp:
                ap.error("--llama-cpp is needed for llama.cpp's converter")
            record(measure(stage, model, work, args.llama_cpp))
        if not os.environ.get("SIZE_BENCH_KEEP"):
            shutil.rmtree(work / "distilled", ignore_errors=True)
    LOCKED.release()
    TABLE.write_text(table(_load()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
