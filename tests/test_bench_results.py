"""Benchmark results: what the child measures, the roofline, the versioned schema, suites as
pytest-benchmark files, GPU runs refusing cleanly without CUDA, and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.bench import recommend, run_suite, write_report
from edgekit.bench.bandwidth import weight_bytes_per_token
from edgekit.bench.gpu import check_gpu, llamacpp_has_cuda, ort_has_cuda
from edgekit.bench.runners import run_local
from edgekit.bench.schema import load_results, validate_results
from edgekit.bench.stats import summarize
from edgekit.bench.suites import list_suites
from edgekit.errors import BackendUnavailable, InputError
from edgekit.targets import load_target

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(make_tiny_hf) -> Path:
    return make_tiny_hf("llama")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model) -> Path:
    from edgekit.export.gguf import export_gguf

    (path,) = export_gguf(tiny_model, tmp_path_factory.mktemp("results-gguf"), ["Q8_0"], progress=False)
    return path


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "small.toml"
    path.write_text(
        'name = "small"\nprompt_lengths = [16, 64]\nnew_tokens = 12\nrepeats = 2\nwarmup = 1\nrounds = 2\n'
        "quality_tokens = 64\n"
    )
    return path


@pytest.fixture(scope="module")
def suite_results(tiny_gguf, tiny_model, small_suite, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("suite-out")
    target = load_target("raspberry-pi-5")
    results = run_suite(
        [tiny_gguf], small_suite, target=target, reference_model=tiny_model, teacher_model=tiny_model, out_dir=out
    )
    results["recommendation"] = recommend(results, target)
    return results, out


def test_summarize_gives_median_and_spread_when_given_repeats():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0 and s["n"] == 5
    assert s["p10"] == pytest.approx(1.4) and s["p90"] == pytest.approx(4.6)


def test_child_repeats_every_metric_after_warmup_when_asked(tiny_gguf):
    spec = {
        "artifact": str(tiny_gguf),
        "options": {"n_threads": 1},
        "prompt_lengths": [16, 2000],  # 2000 does not fit the 512-token context: clipped and recorded
        "new_tokens": 8,
        "repeats": 3,
        "warmup": 2,
    }
    r = run_local(spec)
    assert r.get("error") is None, r
    for key in ("load_time_s", "ttft_s", "decode_tokens_per_s"):
        assert r[key]["n"] == 3 and r[key]["p10"] <= r[key]["median"] <= r[key]["p90"], key
    assert set(r["prefill_tokens_per_s"]) == {"16", "2000"}
    assert all(s["n"] == 3 for s in r["prefill_tokens_per_s"].values())
    assert r["prompt_tokens"] == {"16": 16, "2000": r["n_ctx"] - 8 - 1}
    assert 1 <= r["decode_tokens"] <= 8 and r["decode_tokens_requested"] == 8


def test_weight_bytes_per_token_leaves_out_the_embedding_table_when_the_output_matrix_is_separate(tiny_gguf):
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(tiny_gguf).tensors}
    assert "output.weight" in tensors  # the tiny llama has untied embeddings
    assert weight_bytes_per_token(tiny_gguf) == sum(tensors.values()) - tensors["token_embd.weight"]
    assert weight_bytes_per_token(tiny_gguf) < tiny_gguf.stat().st_size


def test_roofline_fraction_is_decode_speed_over_bandwidth_per_byte_read(suite_results):
    results, _ = suite_results
    (r,) = results["results"]
    per_token = r["weight_bytes_per_token"] + r["kv_bytes_measured"]
    roof = results["host"]["bandwidth_gbs"] * 1e9 / per_token
    assert r["roofline_fraction"] == pytest.approx(r["decode_tokens_per_s"]["median"] / roof)
    assert r["kv_bytes_measured"] > 0 and r["kv_bytes"] > r["kv_bytes_measured"]  # target context > bench context
    per_target_token = r["weight_bytes_per_token"] + r["kv_bytes"]
    assert r["predicted_decode_tokens_per_s"] == pytest.approx(0.58 * 17e9 / per_target_token)  # calibrated
    assert (r["predicted_decode_low"], r["predicted_decode_high"]) == pytest.approx(
        (0.52 * 17e9 / per_target_token, 0.64 * 17e9 / per_target_token)
    )


def test_quality_is_measured_against_the_fp_student_and_the_teacher(suite_results):
    (r,) = suite_results[0]["results"]
    q = r["quality"]
    assert q["tokens"] > 0 and q["ppl"] > 1
    for ref in ("vs_fp", "vs_teacher"):
        assert 0 <= q[ref]["mean_kl"] < 0.05 and q[ref]["top1"] > 0.9, q[ref]


def test_results_file_validates_against_the_versioned_schema(suite_results, tmp_path):
    results, out = suite_results
    assert json.loads((out / "results.json").read_text())["schema_version"] == 1
    validate_results(results)
    (r,) = results["results"]
    assert r["rounds"] == 2 and r["decode_tokens_per_s"]["n"] == 4 and len(r["runs"]["decode_tokens_per_s"]) == 2
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**results, "schema_version": 99}))
    with pytest.raises(InputError, match="schema_version 99"):
        load_results(path)
    broken = json.loads(json.dumps(results))
    del broken["results"][0]["decode_tokens_per_s"]
    path.write_text(json.dumps(broken))
    with pytest.raises(InputError) as info:
        load_results(path)
    assert str(path) in str(info.value) and "decode_tokens_per_s" in str(info.value)


def test_recommendation_reason_says_the_speed_was_predicted_when_not_on_the_device(suite_results):
    rec = suite_results[0]["recommendation"]
    assert rec["quant"] == "Q8_0" and rec["basis"] == "predicted"
    assert "predicted to decode" in rec["reason"] and "calibrated on" in rec["reason"]
    assert "raspberry-pi-5" in rec["reason"]
    measured = recommend(suite_results[0], load_target("raspberry-pi-5"), on_device=True)
    assert measured["basis"] == "measured" and "measured on the device" in measured["reason"]


def test_report_has_the_recommendation_first_and_inline_plots(suite_results, tmp_path):
    md, page = write_report(suite_results[0], tmp_path)
    html = page.read_text()
    assert html.index("Recommended") < html.index("<table")
    assert html.count("data:image/png;base64,") == 2 and "src='http" not in html
    text = md.read_text()
    assert "Recommended: Q8_0" in text and "| Q8_0 |" in text


def test_every_suite_is_collected_as_a_pytest_benchmark_file():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "bench/bench_suites.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    collected = {line.split("[", 1)[1].rstrip("]") for line in proc.stdout.splitlines() if "::test_suite[" in line}
    assert collected == set(list_suites())


@pytest.mark.skipif(llamacpp_has_cuda(), reason="this llama-cpp-python can offload to a GPU")
def test_gpu_run_is_refused_in_one_line_when_no_cuda_backend_is_installed(tiny_gguf, small_suite):
    with pytest.raises(BackendUnavailable) as info:
        run_suite([tiny_gguf], small_suite, gpu=True)
    message = str(info.value)
    assert str(tiny_gguf) in message and "CUDA" in message and "\n" not in message


@pytest.mark.skipif(ort_has_cuda(), reason="onnxruntime-gpu is installed")
def test_gpu_check_names_the_onnx_wheel_when_ort_lacks_cuda(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        check_gpu([folder])


@pytest.mark.gpu
def test_gpu_run_reports_gpu_memory_when_llamacpp_offloads(tiny_gguf, small_suite):
    if not llamacpp_has_cuda():
        pytest.skip("llama-cpp-python was built without GPU offload")
    results = run_suite([tiny_gguf], small_suite, gpu=True)
    (r,) = results["results"]
    assert r.get("error") is None, r
    assert r["gpu_memory_bytes"] and r["gpu_memory_bytes"] > 0 and r["gpu_memory_method"]
    assert results["host"]["gpu_bandwidth_gbs"] > 0


def _edgekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_bench_cli_writes_valid_results_and_both_reports_with_a_recommendation(
    tiny_gguf, tiny_model, small_suite, tmp_path
):
    out = tmp_path / "out"
    proc = _edgekit(
        "bench", str(tiny_gguf), "--suite", str(small_suite), "--target", "raspberry-pi-5",
        "--reference", str(tiny_model), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = load_results(out / "results.json")
    assert results["recommendation"]["quant"] == "Q8_0"
    assert (out / "report.html").stat().st_size < 1_000_000 and "Recommended: Q8_0" in (out / "report.md").read_text()


@pytest.mark.skipif(llamacpp_has_cuda(), reason="this llama-cpp-python can offload to a GPU")
def test_bench_cli_gpu_without_cuda_exits_4_with_one_line(tiny_gguf, small_suite, tmp_path):
    proc = _edgekit("bench", str(tiny_gguf), "--suite", str(small_suite), "--device", "cuda", "--out", str(tmp_path))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 4 and len(lines) == 1 and "CUDA" in lines[0], proc.stderr
    assert not (tmp_path / "results.json").exists()


def _round(decode: list[float], rss: int, fits: bool = True) -> dict:
    s = summarize(decode)
    return {
        "artifact": "m.gguf",
        "load_time_s": s,
        "ttft_s": s,
        "decode_tokens_per_s": s,
        "prefill_tokens_per_s": {"128": s},
        "peak_rss_bytes": rss,
        "os_max_rss_bytes": rss,
        "fits": fits,
        "runs": {
            "load_time_s": [0.1] * len(decode),
            "ttft_s": [0.01] * len(decode),
            "prefill_tokens_per_s": {"128": decode},
            "decode_tokens_per_s": decode,
            "decode_tokens": [128] * len(decode),
        },
    }


def test_pooled_rounds_summarize_every_kept_run_and_keep_the_largest_memory():
    from edgekit.bench.stats import pool_rounds

    pooled = pool_rounds([_round([10, 11], 100), _round([20, 21], 300), _round([12, 13], 200, fits=False)])
    assert pooled["decode_tokens_per_s"]["n"] == 6 and pooled["decode_tokens_per_s"]["median"] == 12.5
    assert pooled["decode_tokens_per_s"]["max"] == 21 and pooled["prefill_tokens_per_s"]["128"]["min"] == 10
    assert pooled["peak_rss_bytes"] == 300 and pooled["fits"] is False and pooled["rounds"] == 3
    assert pooled["runs"]["decode_tokens_per_s"] == [[10, 11], [20, 21], [12, 13]]
    failure = {"artifact": "m.gguf", "error": "killed", "fits": False}
    assert pool_rounds([_round([10], 100), failure]) is failure


def test_rounds_alternate_between_artifacts_when_a_suite_has_several(tiny_gguf, small_suite, tmp_path, monkeypatch):
    import shutil

    import edgekit.bench.harness as harness

    other = tmp_path / "other.gguf"
    shutil.copy(tiny_gguf, other)
    order = []

    def fake_run_local(spec, **_):
        order.append(Path(spec["artifact"]).name)
        return {**_round([10.0, 12.0], 100), "artifact": spec["artifact"], "quant": "Q8_0", "decode_tokens": 12,
                "prompt_tokens": {"16": 16, "64": 64}}  # fmt: skip

    monkeypatch.setattr(harness, "run_local", fake_run_local)
    results = harness.run_suite([tiny_gguf, other], small_suite)
    assert order == [tiny_gguf.name, "other.gguf", tiny_gguf.name, "other.gguf"]
    assert all(r["rounds"] == 2 and r["decode_tokens_per_s"]["n"] == 4 for r in results["results"])
