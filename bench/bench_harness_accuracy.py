"""Does the harness measure what it claims? Its decode tokens/s against a direct llama-cpp-python timing
of the same file (target ±5%), and its peak RSS against ``/usr/bin/time -v`` (target ±10%).

Run:  python bench/bench_harness_accuracy.py [GGUF]     (default: the demo teacher's Q4_K_M export)

Both decode timings use the same prompt tokens (held-out text), greedy loop length, thread count and
context, and one warm-up generation before the timed one, each in a fresh process, interleaved over
rounds; medians are compared (and, since interference only ever slows a run, the best rounds too).
Run it on an otherwise idle machine: llama.cpp's thread pool is very sensitive to other processes on
the same cores (``EDGEKIT_BENCH_THREADS=1`` leaves a core free and is much steadier on a shared one).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit.bench.runners import run_local

THREADS = int(os.environ.get("EDGEKIT_BENCH_THREADS", "2"))
NEW_TOKENS = 128
PROMPT_TOKENS = 64
ROUNDS = int(os.environ.get("EDGEKIT_BENCH_ROUNDS", "7"))

DIRECT = r"""
import json, sys, time
from llama_cpp import Llama
from edgekit.data import builtin_documents, split_documents
path, threads, n_new, n_prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
text = "\n\n".join(split_documents(builtin_documents())[1][:40])  # the harness's prompt text
prompt = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)[:n_prompt]
def decode():
    stamps = []
    for i, _tok in enumerate(llm.generate(prompt, top_k=1, temp=0.0, reset=True)):
        stamps.append(time.perf_counter())
        if i + 1 >= n_new:
            break
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])
decode()  # warm-up, as the harness does (warmup = 1)
print(json.dumps({"decode": decode()}))
"""


def _demo_q4() -> Path:
    from edgekit.demo import demo_teacher
    from edgekit.export.gguf import export_gguf

    out = Path(tempfile.gettempdir()) / "edgekit-bench-harness"
    path = out / "edgekit-demo-Q4_K_M.gguf"
    if not path.exists():
        export_gguf(demo_teacher(), out, ["Q4_K_M"], name="edgekit-demo", progress=False)
    return path


def harness_decode(path: Path) -> tuple[float, int]:
    spec = {
        "artifact": str(path),
        "options": {"n_threads": THREADS, "n_ctx": 1024},
        "prompt_lengths": [PROMPT_TOKENS],
        "new_tokens": NEW_TOKENS,
        "repeats": 1,
        "warmup": 1,
    }
    r = run_local(spec)
    return r["decode_tokens_per_s"]["median"], r["peak_rss_bytes"]


def direct_decode(path: Path) -> float:
    cmd = [sys.executable, "-c", DIRECT, str(path), str(THREADS), str(NEW_TOKENS), str(PROMPT_TOKENS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["decode"]


def time_v_max_rss(path: Path) -> tuple[int, int]:
    """(peak RSS the child reported, maximum RSS /usr/bin/time -v saw) for one child run."""
    spec = {
        "artifact": str(path),
        "options": {"n_threads": THREADS, "n_ctx": 1024},
        "prompt_lengths": [PROMPT_TOKENS],
        "new_tokens": NEW_TOKENS,
        "repeats": 1,
        "warmup": 1,  # as every shipped suite: the warm-up run is sampled continuously
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    proc = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "edgekit.bench.child", fh.name], capture_output=True, text=True
    )
    os.unlink(fh.name)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return child["peak_rss_bytes"], kib * 1024


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _demo_q4()
    harness, direct = [], []
    for _ in range(ROUNDS):
        harness.append(harness_decode(path)[0])
        direct.append(direct_decode(path))
    h, d = statistics.median(harness), statistics.median(direct)
    paired = statistics.median(x / y for x, y in zip(harness, direct, strict=True))
    print(f"file: {path} ({path.stat().st_size / 2**20:.2f} MiB), threads {THREADS}, {NEW_TOKENS} new tokens")
    print(f"decode tok/s  harness median {h:,.0f}  direct llama-cpp-python median {d:,.0f}  ratio {h / d:.3f}")
    print(f"  harness rounds {[round(x) for x in harness]}  direct rounds {[round(x) for x in direct]}")
    print(f"  median of per-round ratios {paired:.3f}; best-of ratio {max(harness) / max(direct):.3f}")
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
    if Path("/usr/bin/time").exists():
        reported, os_view = time_v_max_rss(path)
        print(
            f"peak RSS  harness {reported / 2**20:,.1f} MiB  /usr/bin/time -v {os_view / 2**20:,.1f} MiB  "
            f"ratio {reported / os_view:.3f}"
        )


if __name__ == "__main__":
    main()
