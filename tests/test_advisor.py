"""plan and advisor: sizes from configs, the three paths, cost arithmetic, measurements, student shapes."""

from __future__ import annotations

import published_configs as published
import pytest
import torch
from published_configs import hf_config
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from edgekit.advisor import PRUNE_LIMIT, CostSettings, advise, max_params
from edgekit.costs import COST, estimate, gpu_class, topk_cache_bytes_per_token
from edgekit.errors import ConfigError, InputError
from edgekit.measured import apply_measurements, read_measurements
from edgekit.models import TinySpec, tiny_model
from edgekit.plan import count_params, kv_cache_bytes, plan_level
from edgekit.students import student_config, student_shape
from edgekit.targets import load_target


def _llama(layers: int, hidden: int = 2048, inter: int = 5632, vocab: int = 32000) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        vocab_size=vocab,
        tie_word_embeddings=False,
    )


LLAMA_32_1B, LLAMA_31_8B, QWEN_25_05B = (
    hf_config(c) for c in (published.LLAMA_32_1B, published.LLAMA_31_8B, published.QWEN_25_05B)
)


def test_parameter_count_is_exact_by_hand_and_against_torch():
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=False,
    )
    # per layer: q,o 256x256 each, k,v 256x128 each, MLP 3x256x768, two norms; embeddings and lm_head; final norm
    by_hand = 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768 + 2 * 256) + 2 * 512 * 256 + 256
    assert count_params(config) == by_hand == 1_836_288
    for arch in ("llama", "qwen2", "mistral"):
        model = tiny_model(TinySpec(arch=arch, vocab_size=512))
        assert count_params(model.config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("config", "published"),
    [(LLAMA_32_1B, 1_235_814_400), (LLAMA_31_8B, 8_030_261_248), (QWEN_25_05B, 494_032_768)],
    ids=["Llama-3.2-1B", "Llama-3.1-8B", "Qwen2.5-0.5B"],
)
def test_parameter_count_equals_the_published_total_when_given_a_real_config(config, published):
    assert count_params(config) == published


def test_kv_cache_and_level_numbers_by_hand():
    config = Qwen2Config(
        hidden_size=512, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2
    )
    # 2 (K and V) x 3 layers x 2 kv heads x 64 head_dim x 1000 tokens x 2 bytes (f16)
    assert kv_cache_bytes(config, 1000) == 2 * 3 * 2 * 64 * 1000 * 2
    pi = load_target("raspberry-pi-5")
    lv = plan_level(config, pi, "Q8_0")
    assert lv.file_bytes == int(count_params(config) * 8.5 / 8)  # Q8_0: 34 bytes per 32 weights
    assert lv.kv_bytes == kv_cache_bytes(config, pi.budget.context_length)
    # calibrated: 58 % of 17 GB/s over the weights read per token (the untied input embedding is a
    # lookup, not a read: vocab x hidden at 8.5 bits) plus the KV cache
    read = lv.file_bytes - 151936 * 512 * 8.5 / 8
    assert lv.decode_tokens_per_s == pytest.approx(0.58 * 17e9 / (read + lv.kv_bytes), rel=1e-6)
    assert (lv.decode_low, lv.decode_high) == pytest.approx(
        (0.52 * 17e9 / (read + lv.kv_bytes), 0.64 * 17e9 / (read + lv.kv_bytes)), rel=1e-6
    )
    assert "58%" in lv.speed_note and "Raspberry Pi 5" in lv.speed_note
    assert lv.fits == (lv.total_bytes <= 5000 * 2**20) and lv.basis == "predicted"


def test_llama_1b_plan_numbers_by_hand_on_the_jetson():
    jetson = load_target("jetson-orin-nano")
    lv = plan_level(LLAMA_32_1B, jetson, "Q4_K_M")
    kv = 2 * 16 * 8 * 64 * 2048 * 2  # K and V, 16 layers, 8 KV heads of 64, 2048 tokens, f16
    assert lv.kv_bytes == kv == 64 * 2**20
    assert lv.file_bytes == int(1_235_814_400 * 4.89 / 8)
    assert lv.overhead_bytes == 64 * 2**20 + 512 * (128256 + 4 * 2048) * 4  # fixed + one f32 prefill batch
    # tied embeddings: the table is the output matrix and is read whole; the Orin Nano borrows 47 % from the AGX
    assert lv.decode_tokens_per_s == pytest.approx(0.47 * 68e9 / (lv.file_bytes + kv), rel=1e-6)


def test_a_model_that_fits_is_quantized_at_the_highest_level_that_meets_the_budget():
    advice = advise(_llama(22), load_target("raspberry-pi-5"))  # ~1.1B parameters: fits 5 GB at Q8_0
    assert advice.choice == "quantize"
    assert [(o.path, o.level, o.meets_budget, o.cost) for o in advice.options] == [("quantize", "Q8_0", True, None)]


def _first_config(target, slow: str, fast: str) -> LlamaConfig:
    """The shallowest config that fits at ``slow`` but decodes below the floor there, and meets it at ``fast``."""
    floor = target.budget.min_decode_tokens_per_s
    for layers in range(8, 400):
        config = _llama(layers)
        s, f = plan_level(config, target, slow), plan_level(config, target, fast)
        if s.fits and s.decode_tokens_per_s < floor <= f.decode_tokens_per_s and f.fits:
            return config
    raise AssertionError("no such config")


def test_quantize_steps_down_a_level_when_q8_is_below_the_speed_floor():
    pi = load_target("raspberry-pi-5")
    config = _first_config(pi, "Q8_0", "Q5_K_M")
    advice = advise(config, pi)
    assert advice.choice == "quantize" and advice.options[0].level == "Q5_K_M"
    assert "above the 5 tokens/s floor" in advice.options[0].reason


def test_low_quality_budget_refuses_q4_and_prunes_when_only_q4_meets_the_budget():
    pi = load_target("raspberry-pi-5")
    config = _first_config(pi, "Q5_K_M", "Q4_K_M")
    assert advise(config, pi, quality_budget="moderate").options[0].level == "Q4_K_M"
    low = advise(config, pi, quality_budget="low")
    assert low.choice == "prune" and low.options[0].level == "Q5_K_M"
    with pytest.raises(ConfigError, match="--quality-budget"):
        advise(config, pi, quality_budget="some")


def _layers_for_ratio(target, lo: float, hi: float) -> LlamaConfig:
    """A config whose allowed/actual parameter ratio at Q4_K_M lies in [lo, hi)."""
    for layers in range(8, 600, 2):
        config = _llama(layers, hidden=4096, inter=11008)
        ratio = max_params(config, target, "Q4_K_M") / count_params(config)
        if lo <= ratio < hi:
            return config
    raise AssertionError("no layer count gives that ratio")


def test_a_model_needing_half_its_parameters_removed_is_pruned():
    pi = load_target("raspberry-pi-5")
    config = _layers_for_ratio(pi, 0.45, 0.55)
    advice = advise(config, pi)
    assert advice.choice == "prune"
    assert [o.path for o in advice.options] == ["prune", "distill", "quantize"]
    assert advice.options[0].params == max_params(config, pi, "Q4_K_M")
    assert not advice.options[2].meets_budget and "Q4_K_M" in advice.options[2].reason
    assert advice.options[0].next_step.endswith(f"--params {advice.options[0].params / 1e6:.0f}M --recover-steps N")


def test_a_model_ten_times_too_big_is_distilled_into_a_student_that_fits():
    pi = load_target("raspberry-pi-5")
    config = _layers_for_ratio(pi, 0.08, 0.12)
    advice = advise(config, pi)
    assert advice.choice == "distill" and advice.options[0].path == "distill"
    student = advice.options[0]
    assert student.params <= max_params(config, pi, "Q4_K_M") < PRUNE_LIMIT * count_params(config)
    assert f"{student.student['layers']}-layer" in student.reason


def test_the_answer_is_none_when_not_even_a_tiny_model_fits():
    pi = load_target("raspberry-pi-5")
    advice = advise(_llama(32, vocab=4_000_000), pi)  # the embeddings alone are over the budget
    assert advice.choice == "none" and [o.path for o in advice.options] == ["quantize"]


def test_context_option_is_used_for_both_the_table_and_the_decision():
    pi = load_target("raspberry-pi-5")
    config = _llama(22)
    assert advise(config, pi).choice == "quantize"  # at the profile's 2,048 tokens
    # a 1.4 GB KV cache is read every token: below 5 tokens/s at 58 % of 17 GB/s, but a smaller model would do
    advice = advise(config, pi, context=32768)
    assert advice.levels[0].kv_bytes == kv_cache_bytes(config, 32768)
    assert advice.choice == "prune" and advice.options[0].params == max_params(config, pi, "Q4_K_M", 32768)
    # at 65,536 tokens the 2.9 GB cache alone caps decode at 0.58 x 17e9 / 2.9e9 = 3.4 tokens/s: nothing meets it
    assert advise(config, pi, context=65536).choice == "none"


def test_recovery_cost_equals_hand_computation():
    cost = estimate(8e9, 4e9, kind="recover", gpu="H100", topk=64, vocab_size=32000)
    tokens = 20 * 4e9  # 20 tokens per student parameter
    teacher, student = 2 * 8e9 * tokens, 6 * 4e9 * tokens  # forward; forward + backward
    assert cost.tokens == tokens and cost.tokens_per_param == 20
    assert cost.teacher_flops == pytest.approx(1.28e21) and cost.student_flops == pytest.approx(1.92e21)
    assert cost.generation_flops == 0
    assert cost.gpu_hours == pytest.approx((teacher + student) / (989e12 * 0.40) / 3600)
    assert cost.gpu_hours == pytest.approx(2246.94, rel=1e-5)
    assert cost.gpu_hours_by_class["A100"] == pytest.approx(3.2e21 / (312e12 * 0.40) / 3600)
    assert cost.cache_bytes == pytest.approx(tokens * (64 * (2 + 2) + 4 + 4))
    assert cost.within_compute_budget is None and cost.tokens_within_budget is None


def test_sequence_level_cost_adds_teacher_generation_at_the_generation_utilisation():
    cost = estimate(1e9, 1e8, tokens=1e9, gpu="L4", sequence_level=True)
    scoring, generation, training = 2 * 1e9 * 1e9, 2 * 1e9 * 1e9, 6 * 1e8 * 1e9
    assert cost.generation_flops == pytest.approx(generation)
    seconds = (scoring + training) / (121e12 * 0.40) + generation / (121e12 * 0.10)
    assert cost.gpu_hours == pytest.approx(seconds / 3600)
    assert cost.gpu_hours == pytest.approx(60.84, rel=1e-3)  # 53,719 s training + 165,289 s writing


def test_compute_budget_says_whether_a_run_fits_and_how_many_tokens_it_pays_for():
    full = estimate(2e9, 1e9, gpu="RTX 4090")
    half = estimate(2e9, 1e9, gpu="rtx4090", compute_budget_gpu_hours=full.gpu_hours / 2)
    assert full.gpu == half.gpu == "RTX4090"
    assert half.within_compute_budget is False
    assert half.tokens_within_budget == pytest.approx(full.tokens / 2)
    assert estimate(2e9, 1e9, compute_budget_gpu_hours=1e9).within_compute_budget is True


def test_over_budget_option_says_so_in_its_reason():
    pi = load_target("raspberry-pi-5")
    advice = advise(_layers_for_ratio(pi, 0.45, 0.55), pi, costs=CostSettings(compute_budget_gpu_hours=10))
    assert "over the 10-hour budget" in advice.options[0].reason
    assert advice.options[0].cost["within_compute_budget"] is False


def test_unknown_gpu_class_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="H100, A100, L4, RTX4090"):
        gpu_class("abacus")


def test_topk_cache_estimate_uses_wider_ids_for_large_vocabularies():
    assert topk_cache_bytes_per_token(64, 32000) == 64 * (2 + 2) + 4 + 4 == 264
    assert topk_cache_bytes_per_token(64, 128256) == 64 * (4 + 2) + 4 + 4 == 392
    assert COST["topk_id_bytes_large_vocab"] == 4


def test_topk_cache_estimate_matches_a_real_cache_on_disk(make_tiny_hf, tmp_path):
    from edgekit.distill.cache import build_topk_cache
    from edgekit.models import load_model

    teacher = load_model(make_tiny_hf("llama"))
    rows = torch.randint(3, teacher.config.vocab_size, (6, 32), generator=torch.Generator().manual_seed(0))
    cache = build_topk_cache(teacher, rows, tmp_path, k=16, shard_rows=6, progress=False)
    predicted = topk_cache_bytes_per_token(16, teacher.config.vocab_size)
    assert predicted <= cache.bytes_per_token < predicted * 1.05  # the rest is safetensors headers


def test_student_shape_fits_the_budget_and_builds_a_model_of_that_size():
    config = _llama(12, hidden=1024, inter=2816)
    limit = int(0.3 * count_params(config))
    shape = student_shape(config, limit)
    assert shape["params"] <= limit and shape["params"] > 0.6 * limit
    assert shape["hidden"] % 256 == 0 and shape["intermediate"] % 256 == 0
    assert shape["heads"] * shape["head_dim"] == shape["hidden"] and shape["heads"] % shape["kv_heads"] == 0
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(student_config(config, shape))
    assert sum(p.numel() for p in model.parameters()) == shape["params"]


def _bench_results(model: str, level_bytes: int, speed: float, on_device: bool, target: str = "raspberry-pi-5"):
    return {
        "schema_version": 1,
        "target": target,
        "model": model,
        "results": [
            {
                "quant": "Q8_0",
                "file_size_bytes": level_bytes,
                "peak_rss_bytes": 0,
                "decode_tokens_per_s": {"median": speed},
            }
        ],
        "recommendation": {"basis": "measured" if on_device else "predicted"},
    }


def test_on_device_measurements_replace_the_roofline_and_change_the_advice():
    pi = load_target("raspberry-pi-5")
    config = _llama(22)
    predicted = advise(config, pi)
    assert predicted.options[0].level == "Q8_0" and predicted.basis == "predicted"
    q8 = plan_level(config, pi, "Q8_0")
    measured = advise(config, pi, measurements=_bench_results("m", q8.file_bytes, 3.0, on_device=True))
    assert measured.basis == "measured"
    row = next(lv for lv in measured.levels if lv.level == "Q8_0")
    assert row.basis == "measured" and row.decode_tokens_per_s == 3.0
    assert measured.options[0].level == "Q5_K_M"  # Q8_0 measured below the 5 tokens/s floor


def test_off_device_measurements_keep_speed_predicted_from_the_measured_size():
    pi = load_target("raspberry-pi-5")
    config = _llama(22)
    q8 = plan_level(config, pi, "Q8_0")
    results = _bench_results("m", q8.file_bytes + 10**8, 999.0, on_device=False)
    [row] = apply_measurements([q8], results, pi)
    assert row.basis == "measured size" and row.file_bytes == q8.file_bytes + 10**8
    assert row.decode_tokens_per_s == pytest.approx(0.58 * 17e9 / (row.file_bytes + row.kv_bytes))
    results["results"][0]["weight_bytes_per_token"] = 10**9  # the bench's count of weights read per step
    speed = apply_measurements([q8], results, pi)[0].decode_tokens_per_s
    assert speed == pytest.approx(0.58 * 17e9 / (10**9 + q8.kv_bytes))
    other_target = _bench_results("m", q8.file_bytes, 999.0, on_device=True, target="x86-laptop")
    assert apply_measurements([q8], other_target, pi)[0].basis == "measured size"


def test_measurements_for_another_model_or_schema_are_refused(tmp_path):
    import json

    results = {
        "schema_version": 1,
        "suite": "quick",
        "suite_settings": {},
        "target": "raspberry-pi-5",
        "limited_to_target": False,
        "gpu": False,
        "model": "/models/other",
        "teacher": None,
        "host": {
            "machine": "x86_64",
            "system": "Linux",
            "cpus": 2,
            "memory_bytes": 1,
            "python": "3",
            "bandwidth_gbs": 1.0,
        },
        "results": [],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(InputError, match="measures model /models/other"):
        read_measurements(path, "/models/mine")
    assert read_measurements(path, "/models/other")["target"] == "raspberry-pi-5"
    path.write_text(json.dumps({**results, "schema_version": 99}))
    with pytest.raises(InputError, match="schema_version 99"):
        read_measurements(path, "/models/other")
