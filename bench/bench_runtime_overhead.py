"""What ``EdgeModel`` itself costs per token, measured over a backend that costs nothing.

Run:  pytest bench/bench_runtime_overhead.py --benchmark-enable
The scripted backend yields pre-made ids, so the times are EdgeModel's own work: the id loop and
stats for ``generate``; plus windowed detokenization and stop-string checks for ``stream``. Also the
PyTorch reference loop on the demo teacher, for scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import edgekit
from edgekit.runtime.model import EdgeModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_runtime_textstream import ScriptedBackend

N = 4096
TEXT = ("def read(path):\n    return open(path).read()  # naïve 日本\n" * 100).encode()[:N]


@pytest.fixture(scope="module")
def scripted() -> EdgeModel:
    return EdgeModel(ScriptedBackend(TEXT))


def test_generate_overhead_per_token(benchmark, scripted):
    text = benchmark(scripted.generate, "x", max_tokens=N, ignore_eos=True)
    assert text == TEXT.decode("utf-8", "replace")
    benchmark.extra_info["us_per_token"] = benchmark.stats.stats.mean / N * 1e6


def test_stream_overhead_per_token(benchmark, scripted):
    pieces = benchmark(lambda: list(scripted.stream("x", max_tokens=N, ignore_eos=True, stop="never")))
    assert len(pieces) > N // 4
    benchmark.extra_info["us_per_token"] = benchmark.stats.stats.mean / N * 1e6


@pytest.fixture(scope="module")
def demo_torch():
    from edgekit.demo import demo_teacher

    with edgekit.load(demo_teacher(progress=False), n_threads=2) as model:
        yield model


def test_torch_decode_demo_teacher(benchmark, demo_torch):
    benchmark.pedantic(
        lambda: demo_torch.generate("def main():\n", max_tokens=128, ignore_eos=True), rounds=5, warmup_rounds=1
    )
    benchmark.extra_info["decode_tokens_per_s"] = demo_torch.last_stats.decode_tokens_per_s
