"""Decode speed of edgekit's ONNX Runtime loop vs optimum's ORTModelForCausalLM on the same ONNX model.

The optimum route only (``edgekit[optimum]``, ``export_onnx(..., route="optimum")``): skipped when
optimum-onnx is not installed. The default route's benchmark is ``bench_runtime_onnx_genai.py``.

Target: edgekit >= 100% of optimum's decode tokens/s. Both run greedy, same prompt, same thread
count, same graph. Decode rate = (N - 1) / (t(N tokens) - t(1 token)), so prefill cancels out.

As a script (prints a table; exports the demo teacher, or a tiny model with ``--tiny``):
    python bench/bench_runtime_onnx.py [--tiny] [--tokens 64] [--threads 2] [--repeats 3]
As pytest-benchmark (``pytest bench/bench_runtime_onnx.py --benchmark-enable -s``): times both loops
and checks the ratio from interleaved rounds. Model: the demo teacher, or a tiny random Llama with
``EDGEKIT_BENCH_TINY=1``; threads: ``$EDGEKIT_BENCH_THREADS`` (default 2); rounds of the ratio test:
``$EDGEKIT_BENCH_ROUNDS`` (default 6, order flipped every round).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pytest

PROMPT = "def read_config(path):\n    "
THREADS = int(os.environ.get("EDGEKIT_BENCH_THREADS", "2"))
TARGET_RATIO = 1.0
ROUNDS = int(os.environ.get("EDGEKIT_BENCH_ROUNDS", "6"))  # interleaved rounds of the ratio test


def export_model(tiny: bool, out: Path) -> Path:
    """fp32 ONNX folder of the demo teacher (or of a tiny random Llama)."""
    from edgekit.export.onnx import export_onnx

    if tiny:
        from edgekit.data import builtin_documents
        from edgekit.models import TinySpec, save_model, tiny_model
        from edgekit.tokenizer import train_byte_level_bpe

        tok = train_byte_level_bpe(builtin_documents()[:400], vocab_size=512)
        source = save_model(tiny_model(TinySpec(arch="llama", vocab_size=len(tok))), tok, out / "hf")
    else:
        from edgekit.demo import demo_teacher

        source = demo_teacher(progress=False)
    return export_onnx(source, out / "onnx", ["fp32"], route="optimum", progress=False)[0]


def edgekit_runner(folder: Path, threads: int):
    """A function generating n tokens greedily through OrtBackend."""
    from edgekit.runtime.base import SamplingParams
    from edgekit.runtime.ort_loop import OrtBackend

    backend = OrtBackend(folder, n_threads=threads)
    ids = backend.tokenize(PROMPT)

    def run(n: int) -> int:
        return len(list(backend.generate_ids(ids, n, SamplingParams())))

    return run


def optimum_runner(folder: Path, threads: int):
    """A function generating exactly n tokens greedily through ORTModelForCausalLM.generate."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = ORTModelForCausalLM.from_pretrained(folder, use_cache=True, session_options=options, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder)
    inputs = tok(PROMPT, return_tensors="pt", return_token_type_ids=False)

    def run(n: int) -> int:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return out.shape[1] - inputs["input_ids"].shape[1]

    return run


def decode_rate(run, tokens: int, repeats: int) -> float:
    """Decode tokens/s: best-of-``repeats`` of (tokens - 1) / (t(tokens) - t(1))."""
    run(4)  # warm-up
    best_n = best_1 = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(1)
        best_1 = min(best_1, time.perf_counter() - start)
        start = time.perf_counter()
        run(tokens)
        best_n = min(best_n, time.perf_counter() - start)
    return (tokens - 1) / max(best_n - best_1, 1e-9)


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    pytest.importorskip("optimum.onnxruntime", reason="the optimum route needs edgekit[optimum]")
    tiny = os.environ.get("EDGEKIT_BENCH_TINY") == "1"
    return export_model(tiny=tiny, out=tmp_path_factory.mktemp("bench-onnx"))


@pytest.fixture(scope="module")
def runners(onnx_folder) -> dict:
    return {"edgekit": edgekit_runner(onnx_folder, THREADS), "optimum": optimum_runner(onnx_folder, THREADS)}


@pytest.mark.parametrize("impl", ["edgekit", "optimum"])
def test_bench_onnx_decode_32_tokens(benchmark, runners, impl):
    run = runners[impl]
    run(4)
    assert benchmark(run, 32) == 32


def test_edgekit_onnx_decode_is_at_least_optimum(runners, record_property):
    """Interleaved rounds (best of each) of both loops; edgekit must decode at least as fast."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for round_no in range(ROUNDS):
        order = list(runners.items())
        for name, run in order if round_no % 2 else reversed(order):
            rates[name].append(decode_rate(run, 64, repeats=2))
    best = {name: max(values) for name, values in rates.items()}
    ratio = best["edgekit"] / best["optimum"]
    print(f"\nedgekit {best['edgekit']:.0f} tok/s, optimum {best['optimum']:.0f} tok/s: {ratio:.1%}")
    record_property("ratio", ratio)
    assert ratio >= TARGET_RATIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama instead of the demo teacher")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(args.tiny, Path(tmp))
        ours = decode_rate(edgekit_runner(folder, args.threads), args.tokens, args.repeats)
        theirs = decode_rate(optimum_runner(folder, args.threads), args.tokens, args.repeats)
    print(f"model: {'tiny llama' if args.tiny else 'demo teacher'}  tokens: {args.tokens}  threads: {args.threads}")
    print("| loop | decode tok/s |\n|---|---|")
    print(f"| edgekit OrtBackend | {ours:.1f} |\n| optimum ORTModelForCausalLM | {theirs:.1f} |")
    print(f"edgekit / optimum = {100 * ours / theirs:.0f}%")


if __name__ == "__main__":
    main()
