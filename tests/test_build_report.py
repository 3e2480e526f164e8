"""The build report (report.md / report.html in a bundle): made from the manifest, agreeing with inspect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgekit.pipeline import report, summary
from edgekit.targets import load_target

SHA_Q4 = "ab" * 32
SHA_Q8 = "cd" * 32


def fake_manifest() -> dict:
    """A small manifest of the shape ``edgekit build`` writes (no model is built)."""
    profile = load_target("raspberry-pi-5")

    def predicted(size: int, mid: float) -> dict:
        return {
            "decode_tokens_per_s": mid,
            "decode_low_tokens_per_s": mid * 0.52 / 0.58,
            "decode_high_tokens_per_s": mid * 0.64 / 0.58,
            "basis": "calibrated",
            "note": "llama.cpp at 58% (52%–64%) of 17 GB/s, calibrated on Raspberry Pi 5",
            "prefill_tokens_per_s": 7.33,
            "weight_bytes_per_token": size,
            "kv_bytes": 4194304,
            "context": 2048,
            "memory_bytes": size + 4194304 + 75 * 2**20,
            "fits": True,
            "meets_floor": True,
        }

    def bench(decode: float, ppl: float, kl: float) -> dict:
        return {
            "decode_tokens_per_s": decode,
            "decode_tokens_requested": 128,
            "prefill_tokens_per_s": {"128": 5012.3, "512": 4480.55},
            "peak_rss_bytes": 130 * 2**20,
            "perplexity": ppl,
            "mean_kl_vs_teacher": kl,
        }

    return {
        "schema_version": 1,
        "target": "raspberry-pi-5",
        "target_profile": profile.model_dump(mode="json"),
        "teacher": {"source": "demo", "name": "edgekit-demo-llama", "fingerprint": "f" * 16},
        "student": {"parameters": 3_473_664},
        "stages": [
            {"name": "distill", "key": "k1", "seconds": 61.234, "skipped": False},
            {"name": "prune", "key": "k2", "seconds": 4.5, "skipped": True},
            {"name": "recover", "key": "k3", "seconds": 30.1, "skipped": False},
        ],
        "lineage": [
            {"stage": "teacher", "parameters": 5_243_136, "size_bytes": 20_972_544, "perplexity": 23.4567,
             "mean_kl_vs_teacher": 0.0, "top1_vs_teacher": 1.0, "seconds": None},
            {"stage": "distill", "parameters": 5_243_136, "size_bytes": 20_972_544, "perplexity": 24.0123,
             "mean_kl_vs_teacher": 0.0412, "top1_vs_teacher": 0.9123, "seconds": 61.234},
            {"stage": "prune", "parameters": 3_473_664, "size_bytes": 13_894_656, "perplexity": 31.777,
             "mean_kl_vs_teacher": 0.3012, "top1_vs_teacher": 0.7801, "seconds": 4.5},
            {"stage": "recover", "parameters": 3_473_664, "size_bytes": 13_894_656, "perplexity": 26.891,
             "mean_kl_vs_teacher": 0.0934, "top1_vs_teacher": 0.8702, "seconds": 30.1},
        ],
        "artifacts": [
            {"path": "gguf/m-Q4_K_M.gguf", "format": "gguf", "quant": "Q4_K_M", "file_size_bytes": 2_345_678,
             "verification": {"mean_kl": 0.0123, "top1": 0.9512, "passed": True},
             "bench": bench(3365.9, 27.3, 0.101), "predicted": predicted(2_200_000, 1234.5)},
            {"path": "gguf/m-Q8_0.gguf", "format": "gguf", "quant": "Q8_0", "file_size_bytes": 4_012_345,
             "verification": {"mean_kl": 0.00031, "top1": 0.9934, "passed": True},
             "bench": bench(2911.2, 26.95, 0.0941), "predicted": predicted(3_900_000, 987.65)},
        ],
        "bench": {"suite": "quant-sweep", "host": {"cpus": 2, "bandwidth_gbs": 30.1}, "results": "results.json"},
        "recommended": {"artifact": "gguf/m-Q8_0.gguf", "quant": "Q8_0", "basis": "predicted",
                        "reason": "Q8_0 has the least quality loss of the levels within budget"},
        "files": [
            {"path": "gguf/m-Q4_K_M.gguf", "bytes": 2_345_678, "sha256": SHA_Q4},
            {"path": "gguf/m-Q8_0.gguf", "bytes": 4_012_345, "sha256": SHA_Q8},
        ],
    }  # fmt: skip


@pytest.fixture
def bundle(tmp_path) -> Path:
    m = fake_manifest()
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    report.write_build_report(tmp_path, m)
    return tmp_path


def _inspect(bundle: Path, monkeypatch) -> str:
    from edgekit.cli.build import register

    monkeypatch.setenv("COLUMNS", "400")
    app = typer.Typer()
    register(app)
    # the fake bundle lists files it does not hold: integrity is tested in tests/hostile, numbers here
    result = CliRunner().invoke(app, ["inspect", str(bundle), "--no-verify-hash"])
    assert result.exit_code == 0, result.output
    return result.output


def test_report_has_stage_rows_ship_commands_and_the_sha256_inspect_shows(bundle, monkeypatch):
    shown = _inspect(bundle, monkeypatch)
    [sha] = re.findall(r"sha256 ([0-9a-f]{64})", shown)
    assert sha == SHA_Q8  # the recommended file's
    md, page = (bundle / "report.md").read_text(), (bundle / "report.html").read_text()
    for text in (md, page):
        assert sha in text and "gguf/m-Q8_0.gguf" in text
        assert "llama-cli -m ./gguf/m-Q8_0.gguf -t 4 -c 2048 -cnv" in text
        assert "llama-server -m ./gguf/m-Q8_0.gguf" in text and "edgekit run" in text
        for stage, ppl in (("teacher", "23.5"), ("distill", "24.0"), ("prune", "31.8"), ("recover", "26.9")):
            assert re.search(rf"{stage}\W.*?{re.escape(ppl)}", text, re.S), stage
        assert "0 (baseline)" in text and "4.50 (cached)" in text  # the teacher row; a cached stage's time
    assert page.count("data:image/png;base64,") == 3  # trade-off, pipeline, host


def test_inspect_and_the_report_agree_on_every_number(bundle, monkeypatch):
    shown = _inspect(bundle, monkeypatch)
    md = (bundle / "report.md").read_text()
    manifest = json.loads((bundle / "manifest.json").read_text())
    _, rows = summary.artifact_rows(manifest)
    for row in rows + summary.stage_rows(manifest):
        for cell in row:
            assert cell in shown, (cell, "inspect")
            assert cell in md, (cell, "report")


def test_figures_have_three_significant_figures_and_llama_bench_columns(bundle):
    headers, rows = summary.artifact_rows(json.loads((bundle / "manifest.json").read_text()))
    assert "host pp512 (tok/s)" in headers and "host tg128 (tok/s)" in headers
    q4 = dict(zip(headers, rows[0], strict=True))
    assert q4["host tg128 (tok/s)"] == "3,370" and q4["host pp512 (tok/s)"] == "4,480"  # not 3,365.9
    assert q4["target decode (tok/s)"] == "1,230 (1,110–1,360)"
    assert q4["file (MiB)"] == "2.24" and q4["KL vs fp (nats/tok)"] == "0.0123"


def test_report_of_a_manifest_without_lineage_or_bench_says_what_is_missing(tmp_path):
    m = fake_manifest()
    del m["lineage"]
    m["bench"] = None
    for a in m["artifacts"]:
        a["bench"] = None
    text = report.markdown(m)
    assert "no lineage rows" in text and "No bench was run" in text
    assert "host tg128" not in text


def test_a_bundle_written_from_real_files_carries_lineage_predictions_and_its_report(make_tiny_hf, tmp_path):
    """write_bundle + add_report_fields on a real (F16) GGUF and tiny HF models, without llama.cpp."""
    from edgekit.export.gguf import write_gguf
    from edgekit.models import load_model, load_tokenizer
    from edgekit.pipeline.bundle import read_manifest, write_bundle

    teacher, student = make_tiny_hf("llama"), make_tiny_hf("llama", seed=1)
    export = tmp_path / "work" / "export"
    (export / "gguf").mkdir(parents=True)
    gguf = write_gguf(load_model(student), load_tokenizer(student), export / "gguf" / "m-F16.gguf", "F16")
    profile = load_target("raspberry-pi-5")
    artifact = {"path": "gguf/m-F16.gguf", "format": "gguf", "quant": "F16", "file_size_bytes": gguf.stat().st_size}
    manifest = {
        "target": profile.name,
        "teacher": {"source": str(teacher), "name": "tiny", "fingerprint": "x"},
        "student": {"parameters": 1000},
        "stages": [{"name": "distill", "key": "k", "seconds": 1.5, "skipped": False}],
        "artifacts": [{**artifact, "verification": {"mean_kl": 1e-4, "top1": 0.99, "passed": True}, "bench": None}],
        "bench": None,
        "recommended": {"artifact": artifact["path"], "quant": "F16", "basis": "size", "reason": "the only one"},
    }
    summary.add_report_fields(
        manifest,
        profile=profile,
        export_dir=export,
        model_path=student,
        stage_models=[("teacher", teacher), ("distill", student)],
        stage_seconds={"distill": 1.5},
    )
    [t, d] = manifest["lineage"]
    assert t["mean_kl_vs_teacher"] == pytest.approx(0, abs=1e-9) and t["top1_vs_teacher"] == 1.0
    assert d["mean_kl_vs_teacher"] > 0 and d["perplexity"] > 1 and d["seconds"] == 1.5 and d["parameters"] > 0
    p = manifest["artifacts"][0]["predicted"]
    assert p["kv_bytes"] > 0 and p["basis"] == "calibrated" and p["decode_low_tokens_per_s"] < p["decode_tokens_per_s"]
    bundle = write_bundle(
        tmp_path / "bundle",
        export_dir=export,
        artifacts=[artifact],
        model_dir=student,
        target_file=Path(profile.source),
        report_dir=None,
        manifest=manifest,
    )
    written = read_manifest(bundle)
    files = {f["path"]: f["sha256"] for f in written["files"]}
    assert {"report.md", "report.html", "gguf/m-F16.gguf"} <= set(files)
    assert files["gguf/m-F16.gguf"] in (bundle / "report.html").read_text()
