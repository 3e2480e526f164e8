"""plan and advisor: sizes from configs, the three paths, cost arithmetic, the --json contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import LlamaConfig, Qwen2Config

from edgekit.advisor import PRUNE_LIMIT, advise, max_params
from edgekit.costs import estimate, topk_cache_bytes_per_token
from edgekit.models import TinySpec, tiny_model
from edgekit.plan import count_params, kv_cache_bytes, plan_level
from edgekit.targets import load_target

ROOT = Path(__file__).resolve().parent.parent


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
    assert lv.predicted_decode_tokens_per_s == pytest.approx(17e9 / (lv.file_bytes + lv.kv_bytes))
    assert lv.fits == (lv.total_bytes <= 5000 * 2**20)


def test_a_model_that_fits_is_quantized():
    advice = advise(_llama(22), load_target("raspberry-pi-5"))  # ~1.1B parameters: fits 5 GB at Q8_0
    assert advice.choice == "quantize"
    assert advice.options[0].level == "Q8_0" and advice.options[0].cost is None


def _layers_for_ratio(target, lo: float, hi: float) -> LlamaConfig:
    """A config whose allowed/actual parameter ratio at Q4_K_M lies in [lo, hi)."""
    for layers in range(8, 400, 2):
        config = _llama(layers, hidden=4096, inter=11008)
        ratio = max_params(config, target, "Q4_K_M") / count_params(config)
        if lo <= ratio < hi:
            return config
    raise AssertionError("no layer count gives that ratio")


def test_a_model_needing_half_its_parameters_removed_is_pruned():
    pi = load_target("raspberry-pi-5")
    config = _layers_for_ratio(pi, PRUNE_LIMIT, 0.7)
    advice = advise(config, pi)
    assert advice.choice == "prune"
    assert [o.path for o in advice.options] == ["prune", "distill"]
    assert advice.options[0].params == max_params(config, pi, "Q4_K_M")


def test_a_model_ten_times_too_big_is_distilled():
    pi = load_target("raspberry-pi-5")
    config = _layers_for_ratio(pi, 0.05, 0.12)
    advice = advise(config, pi)
    assert advice.choice == "distill" and advice.options[0].path == "distill"
    assert "student" in advice.options[0].reason


def test_cost_estimate_equals_hand_computation():
    cost = estimate(8e9, 4e9, kind="recover", gpu="H100", topk=64)
    tokens = 20 * 4e9  # 20 tokens per student parameter
    teacher, student = 2 * 8e9 * tokens, 6 * 4e9 * tokens  # forward; forward + backward
    assert cost.tokens == tokens
    assert cost.teacher_flops == pytest.approx(1.28e21) and cost.student_flops == pytest.approx(1.92e21)
    assert cost.gpu_hours == pytest.approx((teacher + student) / (989e12 * 0.40) / 3600)
    assert cost.gpu_hours == pytest.approx(2246.94, rel=1e-5)
    assert topk_cache_bytes_per_token(64) == 64 * (4 + 2) + 4
    assert cost.cache_bytes == pytest.approx(tokens * 388)
    with pytest.raises(ValueError, match="unknown GPU"):
        estimate(1e9, 1e9, gpu="abacus")


def test_plan_json_is_stable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "edgekit", "plan", "--target", "raspberry-pi-5", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1
    assert set(data) == {"schema_version", "target", "model", "choice", "basis", "options", "levels"}
    assert data["choice"] in {"quantize", "prune", "distill"} and data["basis"] == "predicted"
    assert [lv["level"] for lv in data["levels"]] == ["Q4_K_M", "Q5_K_M", "Q8_0"]
    assert set(data["levels"][0]) == {
        "level",
        "format",
        "params",
        "file_bytes",
        "kv_bytes",
        "overhead_bytes",
        "total_bytes",
        "budget_bytes",
        "fits",
        "predicted_decode_tokens_per_s",
    }
    assert set(data["options"][0]) == {"path", "level", "params", "reason", "quality", "cost"}
