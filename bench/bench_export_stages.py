"""Wall time and peak process-tree RSS of ``edgekit export``, per stage, on a real-size checkpoint.

Runs the CLI in this process while a thread sums the RSS of this process and its children (the
quantizer, the verification runtime) every 0.1 s (``bench/rss.py``), and records when each stage
function starts and ends; a stage's peak is the highest sum sampled while it ran. Run under the
heavy-job lock on the shared machine:

    flock /tmp/edgekit-heavy.lock env PYTHONPATH=$PWD python bench/bench_export_stages.py \\
        /work/models/llama-1b --quant Q8_0,Q4_K_M --out /tmp/x --json bench/results-export-stages-1b.json

Extra arguments after ``--`` go to ``edgekit export`` (e.g. ``-- --allocate none --no-verify``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import tree_rss_bytes

# (module, attribute, stage label): the functions whose calls are the stages of an export
STAGES = [
    ("edgekit.lowmem", "load_resident", "load model (checkpoint precision)"),
    ("edgekit.models", "load_model", "load model (load_model)"),
    ("edgekit.export.imatrix", "compute_imatrix", "importance matrix"),
    ("edgekit.export.gguf_stream", "write_gguf_streaming", "write GGUF (streamed)"),
    ("edgekit.export.gguf", "write_gguf", "write GGUF (in memory)"),
    ("edgekit.export.mix", "plan_mixes", "sensitivity allocation"),
    ("edgekit.export.quantize", "quantize_gguf", "llama-quantize"),
    ("edgekit.export.reference", "prepare_reference", "verify: reference pass"),
    ("edgekit.isolate", "run_isolated", "verify: runtime child"),
]


def _folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder`` now (files vanishing mid-walk count 0)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size if path.is_file() else 0
    return total


class Timeline:
    """(t, tree RSS bytes) samples every ``interval`` s, and (label, start, end) stage spans."""

    def __init__(self, interval: float = 0.1, folder: Path | None = None):
        import psutil

        self.root, self.interval, self.folder = psutil.Process(), interval, folder
        self.peak_disk_bytes = 0  # largest total size of ``folder`` seen (sampled every 10th tick)
        self.samples: list[tuple[float, int]] = []
        self.spans: list[tuple[str, float, float]] = []
        self._stop = threading.Event()
        self.t0 = time.perf_counter()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - self.t0, tree_rss_bytes(self.root)))
            tick += 1
            if self.folder is not None and tick % 10 == 0:
                self.peak_disk_bytes = max(self.peak_disk_bytes, _folder_bytes(self.folder))

    def __enter__(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def wrap(self, fn, label: str):
        def timed(*args, **kwargs):
            start = time.perf_counter() - self.t0
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans.append((label, start, time.perf_counter() - self.t0))

        return timed

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((b for t, b in self.samples if start <= t <= end + self.interval), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--quant", default="Q8_0,Q4_K_M")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    timeline = Timeline(folder=args.out)
    for module, attr, label in STAGES:
        with contextlib.suppress(ImportError, AttributeError):
            mod = importlib.import_module(module)
            setattr(mod, attr, timeline.wrap(getattr(mod, attr), label))
    from edgekit.cli import _register_all, app

    _register_all()
    argv = ["export", str(args.model), "--quant", args.quant, "--out", str(args.out), *extra]
    error = None
    with timeline:
        try:
            app(argv, standalone_mode=False)
        except Exception as exc:  # a failed verification still has its stage figures
            error = f"{type(exc).__name__}: {exc}"
    wall = timeline.samples[-1][0] if timeline.samples else 0.0
    spans = sorted(timeline.spans, key=lambda s: s[1])
    result = {
        "model": str(args.model),
        "argv": argv,
        "wall_s": round(wall, 1),
        "peak_tree_rss_gb": round(timeline.peak() / 1e9, 2),
        "peak_out_folder_gb": round(timeline.peak_disk_bytes / 1e9, 2),  # files + temporaries under --out
        "error": error,
        "stages": [
            {
                "stage": label,
                "start_s": round(a, 1),
                "wall_s": round(b - a, 1),
                "peak_tree_rss_gb": round(timeline.peak(a, b) / 1e9, 2),
            }
            for label, a, b in spans
        ],
    }
    for s in result["stages"]:
        print(
            f"{s['stage']:36} start {s['start_s']:7.1f} s  {s['wall_s']:7.1f} s  peak {s['peak_tree_rss_gb']:6.2f} GB"
        )
    print(f"{'whole export':36} {result['wall_s']:21.1f} s  peak {result['peak_tree_rss_gb']:6.2f} GB  {error or ''}")
    print(f"peak size of {args.out}: {result['peak_out_folder_gb']:.2f} GB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
