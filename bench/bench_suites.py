"""Every suite in bench/suites/ as a pytest-benchmark file, through the same harness as ``edgekit bench``.

Run:  pytest bench/bench_suites.py --benchmark-enable -s          (one suite: add ``-k quick``)

Artifacts: ``$EDGEKIT_BENCH_GGUF`` if set, else the demo teacher exported at Q4_K_M; a suite that
exports a ladder (quant-sweep) exports ``$EDGEKIT_BENCH_TARGET``'s (default raspberry-pi-5) from the
demo teacher instead. pytest-benchmark times one whole suite run (the harness repeats and takes
medians inside it); the harness's own figures go into ``extra_info`` and results-<suite>.json is
written to ``$EDGEKIT_BENCH_OUT`` (default: a pytest temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekit.bench import recommend, run_suite
from edgekit.bench.harness import export_ladder
from edgekit.bench.suites import list_suites, load_suite
from edgekit.fileio import write_json_atomic
from edgekit.targets import load_target

pytest.importorskip("llama_cpp")

TARGET = os.environ.get("EDGEKIT_BENCH_TARGET", "raspberry-pi-5")


@pytest.fixture(scope="module")
def demo_model() -> Path:
    from edgekit.demo import demo_teacher

    return demo_teacher(progress=False)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return Path(os.environ.get("EDGEKIT_BENCH_OUT") or tmp_path_factory.mktemp("bench-suites"))


@pytest.fixture(scope="module")
def q4_gguf(demo_model, out_dir) -> Path:
    if os.environ.get("EDGEKIT_BENCH_GGUF"):
        return Path(os.environ["EDGEKIT_BENCH_GGUF"])
    from edgekit.export.gguf import export_gguf

    (path,) = export_gguf(demo_model, out_dir / "single", ["Q4_K_M"], imatrix="auto", progress=False)
    return path


@pytest.mark.parametrize("suite_name", list_suites())
def test_suite(benchmark, request, suite_name, demo_model, out_dir):
    target = load_target(TARGET)
    if load_suite(suite_name).export_ladder:
        artifacts = export_ladder(demo_model, target, out_dir / "ladder", progress=False)
    else:
        artifacts = [request.getfixturevalue("q4_gguf")]
    results = benchmark.pedantic(
        run_suite,
        args=(artifacts, suite_name),
        kwargs={"target": target, "reference_model": demo_model},
        rounds=1,
        iterations=1,
    )
    results["recommendation"] = recommend(results, target)
    write_json_atomic(out_dir / f"results-{suite_name}.json", results)
    measured = [r for r in results["results"] if not r.get("error")]
    assert measured, results["results"]
    for r in measured:
        benchmark.extra_info[f"{r['quant']} decode tok/s"] = r["decode_tokens_per_s"]["median"]
        benchmark.extra_info[f"{r['quant']} peak RSS MiB"] = r["peak_rss_bytes"] / 2**20
    benchmark.extra_info["recommendation"] = results["recommendation"]["reason"]
