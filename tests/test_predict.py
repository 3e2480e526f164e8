"""edgekit.predict: the one calibrated speed model, and every command agreeing on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import predict
from edgekit.bench import harness
from edgekit.bench.bandwidth import weight_bytes_per_token
from edgekit.bench.recommend import predicted
from edgekit.measured import apply_measurements
from edgekit.models import load_config, load_model, load_tokenizer
from edgekit.plan import kv_cache_bytes, plan_level
from edgekit.targets import list_targets, load_target

ROOT = Path(__file__).resolve().parents[1]


def test_decode_is_efficiency_times_bandwidth_over_bytes_read_with_its_range():
    pi = load_target("raspberry-pi-5")
    p = predict.decode(pi, weight_bytes=2e9, kv_bytes=1e8)
    assert p.basis == "calibrated"
    assert (p.tokens_per_s, p.low, p.high) == pytest.approx(
        (0.58 * 17e9 / 2.1e9, 0.52 * 17e9 / 2.1e9, 0.64 * 17e9 / 2.1e9)
    )
    assert "58%" in p.note and "calibrated on" in p.note and p.text() == "4.70 (4.21–5.18)"
    bare = pi.model_copy(update={"calibration": None})
    roof = predict.decode(bare, 2e9, 1e8)
    assert roof.basis == "roofline" and roof.tokens_per_s == pytest.approx(17e9 / 2.1e9) and "upper bound" in roof.note


def test_prefill_comes_from_the_profile_compute_figure():
    pi = load_target("raspberry-pi-5")
    assert predict.prefill(pi, 1.1e9).tokens_per_s == pytest.approx(77e9 / 2.2e9)  # 35 tokens/s, as published
    assert predict.prefill(load_target("jetson-agx-orin"), 1e9) is None  # no published prefill run


def test_three_significant_figures():
    assert [predict.sig3(x) for x in (3365.9, 4.386, 0.07412, 126000, 98.13)] == [
        "3,370",
        "4.39",
        "0.0741",
        "126,000",
        "98.1",
    ]


@pytest.mark.parametrize("name", list_targets())
def test_every_shipped_profile_is_calibrated_with_a_source(name):
    cal = load_target(name).calibration
    assert cal is not None and cal.source.startswith("http") and cal.calibrated_on
    assert cal.decode_efficiency_low <= cal.decode_efficiency <= cal.decode_efficiency_high


def test_shipped_calibrations_are_what_the_published_runs_give():
    """The profiles' figures are the back-test's fit of bench/published_measurements.toml, not typed by hand."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "backtest_predictions.py"), "--check"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_backtest_holds_within_25_percent_on_held_out_devices():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import backtest_predictions as bt
    finally:
        sys.path.pop(0)
    rows = bt.predictions(bt.load_runs())
    held_out = [d.tokens_per_s / r.decode for r, d, _ in rows if r.split == "held-out"]
    assert len(held_out) >= 5 and max(abs(x - 1) for x in held_out) <= 0.25


def test_bench_without_model_predicts_what_plan_predicts_for_the_same_file_and_context(make_tiny_hf, tmp_path):
    """``bench FILE --target T`` (no --model) reads the KV shapes from the GGUF: same prediction as plan."""
    from edgekit.export.gguf import write_gguf

    model_dir = make_tiny_hf("llama")
    gguf = write_gguf(load_model(model_dir), load_tokenizer(model_dir), tmp_path / "m.gguf", "F16")
    target = load_target("raspberry-pi-5")
    context = target.budget.context_length
    config = load_config(model_dir)

    kv = harness._kv_bytes(None, context, gguf)  # what the harness does without --model
    assert kv == kv_cache_bytes(config, context) > 0
    bench = {"artifact": str(gguf), "quant": "F16", "file_size_bytes": gguf.stat().st_size}
    bench["weight_bytes_per_token"] = weight_bytes_per_token(gguf)
    harness.add_target_prediction(bench, target, kv)

    # plan for the same model and context, given that bench's measurements of the file
    lv = plan_level(config, target, "F16", context)
    [row] = apply_measurements([lv], {"results": [bench], "target": None}, target)
    assert row.decode_tokens_per_s == pytest.approx(bench["predicted_decode_tokens_per_s"], rel=1e-12)
    assert (row.decode_low, row.decode_high) == pytest.approx(
        (bench["predicted_decode_low"], bench["predicted_decode_high"]), rel=1e-12
    )
    # ... and the recommendation judges the file by the same figure
    assert predicted(bench, target).tokens_per_s == pytest.approx(row.decode_tokens_per_s, rel=1e-12)
    # from config alone (no file yet) plan's count of bytes read is within 2 % of the file's
    assert lv.decode_tokens_per_s == pytest.approx(row.decode_tokens_per_s, rel=0.02)


def test_kv_shapes_come_from_an_onnx_genai_config(tmp_path):
    (tmp_path / "genai_config.json").write_text(
        '{"model": {"decoder": {"num_hidden_layers": 4, "num_key_value_heads": 2, "head_size": 64}}}'
    )
    assert predict.kv_bytes_for_artifact(tmp_path, 1000) == 2 * 4 * 2 * 64 * 1000 * 2
    assert predict.kv_bytes_for_artifact(tmp_path / "nothing", 1000) is None


LLAMA_32_3B = {  # https://huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}


def test_plan_advice_flips_to_a_lower_level_when_the_calibrated_speed_falls_under_the_floor():
    """Llama 3.2 3B on a Pi 5 (published: 4.5–4.9 tokens/s at Q4_K_M): the bare roofline would ship Q8_0."""
    from transformers import LlamaConfig

    from edgekit.advisor import advise

    config = LlamaConfig(**LLAMA_32_3B)
    pi = load_target("raspberry-pi-5")
    floor = pi.model_copy(update={"budget": pi.budget.model_copy(update={"min_decode_tokens_per_s": 4.0})})
    bare = floor.model_copy(update={"calibration": None})
    assert advise(config, bare).options[0].level == "Q8_0"  # 17e9 / bytes: every level "meets" 4 tokens/s
    calibrated = advise(config, floor)
    q4 = next(lv for lv in calibrated.levels if lv.level == "Q4_K_M")
    assert calibrated.options[0].level == "Q4_K_M" and 4.0 <= q4.decode_tokens_per_s <= 4.9
    assert "calibrated" in calibrated.options[0].reason
    # at the profile's own floor of 5 no level is fast enough: the advice is to shrink the model
    assert advise(config, pi).choice in ("prune", "distill")
