"""Plans (rounding, budgets), importance criteria, iterative schedules, sparsity and the analysis plot."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig

from edgekit.models import count_parameters, tiny_model
from edgekit.plan import count_params, plan_level
from edgekit.prune import PrunePlan, budget_plan, planned_config, prune_model, score
from edgekit.prune.plan import kept_size, params_fit, target_fit
from edgekit.prune.schedule import iterative_prune
from edgekit.prune.sparsity import is_2_4, magnitude_sparsify, projection_sparsity, semi_structured_2_4
from edgekit.targets import load_target

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
)


def _calib(n: int = 4, seq: int = 24) -> torch.Tensor:
    return torch.randint(0, 512, (n, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("size", "ratio", "round_to", "kept"),
    [(768, 0.34, 256, 512), (768, 0.5, 256, 512), (768, 0.9, 256, 256), (768, 0.1, 256, 768), (300, 0.5, 1, 150)],
)
def test_kept_size_rounds_to_nearest_multiple_of_at_least_one_unit(size, ratio, round_to, kept):
    assert kept_size(size, ratio, round_to) == kept


def test_planned_sizes_are_multiples_of_round_to_when_k_quant_rounding():
    config = LlamaConfig(**LLAMA3_8B)
    c = planned_config(config, PrunePlan(ffn=0.37, hidden=0.21, heads=0.3, round_to=256))
    assert c.intermediate_size % 256 == c.hidden_size % 256 == 0
    assert (c.num_attention_heads * c.head_dim) % 256 == 0 and c.num_attention_heads % c.num_key_value_heads == 0
    assert c.head_dim == 128


def test_budget_plan_returns_gentlest_plan_under_parameter_count():
    config = LlamaConfig(**LLAMA3_8B)
    budget = 4_000_000_000
    plan = budget_plan(config, params_fit(budget), ("ffn", "hidden"), PrunePlan(round_to=256))
    assert count_params(planned_config(config, plan)) <= budget
    gentler = replace(plan, ffn=plan.ffn - 0.005, hidden=plan.hidden - 0.005)
    assert count_params(planned_config(config, gentler)) > budget


def test_budget_plan_fits_target_memory_at_level_when_teacher_does_not():
    config, target = LlamaConfig(**LLAMA3_8B), load_target("raspberry-pi-5")
    assert not plan_level(config, target, "Q4_K_M").fits
    plan = budget_plan(config, target_fit(target, "Q4_K_M"), ("ffn", "heads", "hidden"), PrunePlan(round_to=256))
    assert plan_level(planned_config(config, plan), target, "Q4_K_M").fits
    assert plan.ffn == plan.heads == plan.hidden > 0


def test_budget_plan_raises_when_nothing_fits():
    with pytest.raises(ValueError, match="no plan"):
        budget_plan(LlamaConfig(**LLAMA3_8B), params_fit(1000), ("ffn",))


def test_pruned_model_has_budgeted_parameter_count_when_pruned_to_half():
    model = tiny_model(num_layers=2, intermediate_size=768)
    budget = count_parameters(model) // 2
    plan = budget_plan(model.config, params_fit(budget), ("ffn", "hidden"))
    pruned, _ = prune_model(model, plan, _calib())
    assert budget * 0.98 <= count_parameters(pruned) <= budget


def test_loo_score_equals_ppl_change_of_model_without_that_layer():
    from edgekit.prune.importance import calibration_loss
    from edgekit.prune.surgery import apply_keep, keep_everything

    model = tiny_model(num_layers=3)
    with torch.no_grad():  # layer 1 becomes the identity: skipping it changes nothing
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    calib = _calib()
    scores = score(model, calib, "loo")
    assert abs(float(scores.layers[1])) < 1e-3
    keep = keep_everything(model)
    keep.layers, keep.ffn, keep.groups = [1, 2], keep.ffn[:2], keep.groups[:2]
    full, without_0 = calibration_loss(model, calib), calibration_loss(apply_keep(model, keep), calib)
    assert float(scores.layers[0]) == pytest.approx(math.exp(without_0) - math.exp(full), rel=1e-4)
    assert abs(float(scores.layers[0])) > 0.01
    _, report = prune_model(model, PrunePlan(layers=1), calib, criterion="loo")
    assert int(scores.layers.argmin()) not in report["layers_kept"]


@pytest.mark.parametrize("criterion", ["activation", "magnitude", "taylor", "block"])
def test_criteria_score_zeroed_ffn_channels_lowest(criterion):
    model = tiny_model(num_layers=1)
    dead = torch.arange(0, 512, 8)
    with torch.no_grad():  # channels that neither read nor write anything
        for proj in ("gate_proj", "up_proj"):
            getattr(model.model.layers[0].mlp, proj).weight[dead] = 0
        model.model.layers[0].mlp.down_proj.weight[:, dead] = 0
    ffn = score(model, _calib(2, 16), criterion).ffn[0]
    assert set(torch.topk(ffn, len(dead), largest=False).indices.tolist()) == set(dead.tolist())


def test_score_raises_when_criterion_unknown_or_data_missing():
    model = tiny_model(num_layers=1)
    with pytest.raises(ValueError, match="unknown criterion"):
        score(model, _calib(), "random")
    with pytest.raises(ValueError, match="needs calibration"):
        score(model, None, "loo")


def test_iterative_schedule_reaches_planned_shape_and_recovers_after_each_step():
    model = tiny_model(num_layers=3, num_heads=8, num_kv_heads=4)
    plan = PrunePlan(ffn=0.5, heads=0.5, layers=1, hidden=0.5, round_to=64)
    seen = []

    def recover(m):
        seen.append((m.config.intermediate_size, m.config.num_key_value_heads, m.config.num_hidden_layers))
        return m

    pruned, reports = iterative_prune(model, plan, _calib(2, 16), iterations=2, recover=recover)
    final = planned_config(model.config, plan)
    assert count_params(pruned.config) == count_params(final) == count_parameters(pruned)
    assert seen == [(384, 3, 2), (256, 2, 2)] and len(reports) == 2


def test_magnitude_sparsity_zeros_requested_fraction_keeping_shapes():
    model = tiny_model(num_layers=1)
    before, embeddings = count_parameters(model), model.model.embed_tokens.weight.clone()
    achieved = magnitude_sparsify(model, 0.5)
    assert achieved == pytest.approx(0.5, abs=1e-3) == projection_sparsity(model)
    assert count_parameters(model) == before  # storage-only: shapes are unchanged
    assert torch.equal(model.model.embed_tokens.weight, embeddings)


def test_2_4_sparsity_keeps_two_largest_of_every_four():
    model = tiny_model(num_layers=1)
    w = model.model.layers[0].mlp.up_proj.weight
    block = w[0, :4].clone()
    assert semi_structured_2_4(model) == pytest.approx(0.5)
    assert is_2_4(w) and not is_2_4(tiny_model(num_layers=1).model.layers[0].mlp.up_proj.weight)
    kept = block.abs().topk(2).indices
    assert torch.equal(w[0, :4][kept], block[kept]) and int((w[0, :4] == 0).sum()) == 2


def test_plot_scores_writes_png_when_analyzed(tmp_path):
    from edgekit.prune.analyze import plot_scores, summary_rows

    model = tiny_model(num_layers=2)
    scores = score(model, _calib(2, 16), "activation")
    path = plot_scores(scores, tmp_path / "scores.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = summary_rows(scores)
    assert [r["layer"] for r in rows] == [0, 1] and len(rows[0]["heads"].split()) == 4


def test_distill_recovery_uses_a_fresh_seed_each_round(monkeypatch):
    import edgekit.distill
    from edgekit.prune.schedule import distill_recovery

    seen = []

    class Result:
        def __init__(self, student):
            self.student = student

    def fake_distill(teacher, student, train, config, **kwargs):
        seen.append((config.seed, config.steps, config.warmup_steps))
        return Result(student)

    monkeypatch.setattr(edgekit.distill, "distill", fake_distill)
    model = tiny_model(num_layers=1)
    recover = distill_recovery(tiny_model(num_layers=1), _calib(8, 16), steps=30, seed=5)
    assert recover(recover(model)) is model
    assert seen == [(5, 30, 3), (6, 30, 3)]


def test_magnitude_without_data_ranks_layer_that_writes_nothing_last():
    model = tiny_model(num_layers=3)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    scores = score(model, None, "magnitude")
    assert int(scores.layers.argmin()) == 2
    _, report = prune_model(model, PrunePlan(layers=1), None, criterion="magnitude")
    assert report["layers_kept"] == [0, 1]


def test_taylor_group_scores_add_the_groups_own_key_value_rows_to_its_heads():
    model = tiny_model(num_layers=1, num_heads=4, num_kv_heads=2)
    scores = score(model, _calib(2, 16), "taylor")
    heads_only = scores.heads[0].reshape(2, 2).sum(-1)
    assert bool((scores.groups[0] > heads_only * 1.001).all())
