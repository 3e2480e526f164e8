"""Decode speed through ``EdgeModel`` vs llama-cpp-python used directly, on the same GGUF (target >= 97%).

Run:  pytest bench/bench_runtime_llamacpp.py --benchmark-enable -s
GGUF: ``$EDGEKIT_BENCH_GGUF``, else the demo teacher exported with ``edgekit export --format gguf --quant
$EDGEKIT_BENCH_QUANT`` (default Q4_K_M). Threads: ``$EDGEKIT_BENCH_THREADS`` (default 1).

Both sides decode the same greedy tokens from the same short prompt with EOS ignored; decode speed is
(tokens - 1) / (time from first to last token), so prompt processing is not part of it. The baseline is
``Llama.generate`` (llama-cpp-python's own token loop, no text decoding): the least overhead a Python
caller can have. The ratio is taken from interleaved rounds (best of each; the order is reversed every
other round so no path always runs right after another), which resists the noise of a shared machine
better than two separate runs. ``Llama.generate`` on the backend's own ``Llama`` separates what the
edgekit code costs from what differs between two ``Llama`` instances (buffer placement, caches).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

import edgekit
from edgekit.runtime.base import SamplingParams

pytest.importorskip("llama_cpp")
if __import__("importlib").util.find_spec("edgekit.runtime.llamacpp") is None:
    pytest.skip("edgekit.runtime.llamacpp is not in this tree yet (branch gguf)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
N_TOKENS = 256  # tokens per round
ROUNDS = int(os.environ.get("EDGEKIT_BENCH_ROUNDS", "15"))
THREADS = int(os.environ.get("EDGEKIT_BENCH_THREADS", "1"))  # 1: steadier on a loaded machine
N_CTX = 1024
PROMPT = "def main():\n"
TARGET_RATIO = 0.97


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory) -> Path:
    """The GGUF to measure: given by the environment, or the demo teacher exported once."""
    if os.environ.get("EDGEKIT_BENCH_GGUF"):
        return Path(os.environ["EDGEKIT_BENCH_GGUF"])
    from edgekit.demo import demo_teacher

    teacher = demo_teacher(progress=False)
    out = tmp_path_factory.mktemp("bench-gguf")
    quant = os.environ.get("EDGEKIT_BENCH_QUANT", "Q4_K_M")
    cmd = [sys.executable, "-m", "edgekit", "export", str(teacher), "--format", "gguf", "--quant", quant]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([*cmd, "--no-verify", "--out", str(out)], check=True, env=env, timeout=600)
    files = sorted(out.rglob("*.gguf"))
    return next((p for p in files if quant in p.name), files[0])


@pytest.fixture(scope="module")
def edge(gguf_path):
    with edgekit.load(gguf_path, n_threads=THREADS, n_ctx=N_CTX) as model:
        yield model


@pytest.fixture(scope="module")
def direct(gguf_path):
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_threads=THREADS, n_ctx=N_CTX, n_gpu_layers=0, verbose=False)
    yield llm
    llm.close()


def _decode_rate(tokens: Iterable[int], n: int) -> float:
    """Decode tokens/s of the first ``n`` tokens of ``tokens``, timed from the first token to the last."""
    it = iter(tokens)
    next(it)
    first = time.perf_counter()
    count = 1
    for _ in it:
        count += 1
        if count == n:
            break
    assert count == n, f"only {count} tokens"
    return (n - 1) / (time.perf_counter() - first)


def edge_rate(model) -> float:
    """Decode tokens/s of one greedy generation through the full EdgeModel path (``generate``)."""
    model.generate(PROMPT, max_tokens=N_TOKENS, ignore_eos=True)
    assert model.last_stats.generated_tokens == N_TOKENS
    return model.last_stats.decode_tokens_per_s


def direct_rate(llm) -> float:
    """Decode tokens/s of one greedy generation with ``Llama.generate`` (no detokenization)."""
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    return _decode_rate(llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, reset=True), N_TOKENS)


def test_decode_edgemodel(benchmark, edge):
    rates: list[float] = []
    benchmark.pedantic(lambda: rates.append(edge_rate(edge)), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["decode_tokens_per_s_best"] = max(rates)


def test_decode_llamacpp_direct(benchmark, direct):
    rates: list[float] = []
    benchmark.pedantic(lambda: rates.append(direct_rate(direct)), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["decode_tokens_per_s_best"] = max(rates)


def backend_rate(model) -> float:
    """Decode tokens/s of the backend's own ``generate_ids`` (no EdgeModel around it)."""
    backend = model.backend
    ids = backend.tokenize(PROMPT)
    return _decode_rate(backend.generate_ids(ids, N_TOKENS, SamplingParams()), N_TOKENS)


@pytest.fixture(scope="module")
def direct_logits_all(gguf_path):
    """llama-cpp-python with ``logits_all=True`` (how LlamaCppBackend used to open it), to show what that costs."""
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_threads=THREADS, n_ctx=N_CTX, n_gpu_layers=0, verbose=False, logits_all=True)
    yield llm
    llm.close()


def test_edgemodel_decode_is_at_least_97_percent_of_direct(edge, direct, direct_logits_all, record_property):
    """Interleaved rounds of EdgeModel, the bare backend and Llama.generate (three ways); best of each."""
    runs = {
        "EdgeModel.generate": lambda: edge_rate(edge),
        "LlamaCppBackend.generate_ids": lambda: backend_rate(edge),
        "Llama.generate": lambda: direct_rate(direct),
        "Llama.generate on the backend's Llama": lambda: direct_rate(edge.backend._llm),
        "Llama.generate (logits_all=True)": lambda: direct_rate(direct_logits_all),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for round_no in range(ROUNDS + 1):
        order = list(runs.items())
        for name, run in order if round_no % 2 else reversed(order):
            rates[name].append(run())
    best = {name: max(values[1:]) for name, values in rates.items()}  # round 0 is warm-up
    print()
    for name, value in best.items():
        print(f"{name:38s} {value:8.0f} tok/s  {value / best['Llama.generate']:6.1%} of Llama.generate")
    ratio = best["EdgeModel.generate"] / best["Llama.generate"]
    record_property("ratio", ratio)
    assert ratio >= TARGET_RATIO
