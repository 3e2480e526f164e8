"""``edgekit prune`` on a tiny model: ratios, budgets, analysis, recovery, sparsity, one-line errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from edgekit.cli import prune as prune_cli
from edgekit.errors import ConfigError
from edgekit.models import count_parameters, load_model


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    prune_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep `prune` a named subcommand
    return app


def _run(app, *args: str):
    result = CliRunner().invoke(app, ["prune", *args, "--calibration-sequences", "2"])
    if result.exception and not isinstance(result.exception, (ConfigError, SystemExit)):
        raise result.exception
    return result


def test_cli_prune_saves_model_with_rounded_shapes_when_ratios_given(app, tiny_llama_dir, tmp_path):
    out = tmp_path / "pruned"
    result = _run(app, str(tiny_llama_dir), "-o", str(out), "--ffn", "0.5", "--heads", "0.5", "--round-to", "128")
    assert result.exit_code == 0, result.output
    model = load_model(out)
    c = model.config
    assert (c.intermediate_size, c.num_key_value_heads, c.num_attention_heads, c.hidden_size) == (256, 1, 2, 256)
    report = json.loads((out / "prune-report.json").read_text())
    assert report["after"]["parameters"] == count_parameters(model) < report["before"]["parameters"]
    assert "held-out ppl" in result.output and (out / "tokenizer.json").is_file()


def test_cli_prune_meets_parameter_budget_when_params_given(app, tiny_llama_dir, tmp_path):
    out = tmp_path / "budget"
    result = _run(app, str(tiny_llama_dir), "-o", str(out), "--params", "0.9M", "--importance", "magnitude")
    assert result.exit_code == 0, result.output
    params = count_parameters(load_model(out))
    assert 0.85e6 < params <= 0.9e6
    assert f"{params:,} parameters predicted" in result.output
    assert "not multiples of 256" in " ".join(result.output.split())  # the teacher's were: warn


def test_cli_prune_analyze_prints_scores_and_saves_plot_without_pruning(app, tiny_llama_dir, tmp_path):
    plot = tmp_path / "scores.png"
    result = _run(app, str(tiny_llama_dir), "--analyze", "--importance", "loo", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert "layer score" in result.output and "hidden channels" in result.output
    assert plot.read_bytes()[:4] == b"\x89PNG"
    detail = json.loads(plot.with_suffix(".json").read_text())
    assert len(detail["ffn"]) == 2 and len(detail["ffn"][0]) == 512 and len(detail["heads"][0]) == 4
    assert not (tmp_path / "config.json").exists()


def test_cli_prune_recovers_after_each_iteration_and_applies_2_4(app, tiny_llama_dir, tmp_path):
    from edgekit.prune.sparsity import is_2_4

    out = tmp_path / "iter"
    args = [str(tiny_llama_dir), "-o", str(out), "--ffn", "0.5", "--iterations", "2", "--recover-steps", "1"]
    result = _run(app, *args, "--two-four")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "prune-report.json").read_text())
    assert [s["shape"]["intermediate"] for s in report["steps"]] == [384, 256]
    assert report["recover_steps"] == 1 and report["projection_sparsity"] == pytest.approx(0.5)
    assert is_2_4(load_model(out).model.layers[0].mlp.down_proj.weight)


def test_cli_prune_reports_every_bad_option_at_once(app, tiny_llama_dir):
    result = _run(app, str(tiny_llama_dir), "--ffn", "1.5", "--importance", "guess", "--target", "raspberry-pi-5")
    assert isinstance(result.exception, ConfigError)
    keys = [p.key for p in result.exception.problems]
    assert keys == ["--out", "--ffn", "--importance", "--target/--quant", "--budget-on"]


def test_cli_prune_reports_bad_level_and_schedule_options_before_loading(app, tiny_llama_dir):
    args = ["--params", "1M", "--quant", "Q9", "--iterations", "0", "--sparsity", "0.5", "--two-four", "-o", "x"]
    result = _run(app, str(tiny_llama_dir), *args)
    assert isinstance(result.exception, ConfigError)
    keys = [p.key for p in result.exception.problems]
    assert keys == ["--target/--quant", "--quant", "--iterations", "--sparsity/--two-four"]


def test_cli_prune_prints_one_line_errors_and_exits_2_when_run_from_main(tiny_llama_dir, capsys):
    from edgekit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(tiny_llama_dir), "--layers", "-1", "--out", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: edgekit prune: --layers: -1 must be >= 0"]


def test_cli_prune_help_teaches_budgets_gqa_and_recovery(app):
    result = CliRunner().invoke(app, ["prune", "--help"])
    text = " ".join(result.output.replace("│", " ").split())  # rich boxes wrap option help
    for phrase in ("--params", "--target", "num_kv_heads", "--recover-steps", "K-quant", "no speedup"):
        assert phrase in text


def test_cli_prune_refuses_to_remove_every_layer(app, tiny_llama_dir, tmp_path):
    result = _run(app, str(tiny_llama_dir), "-o", str(tmp_path / "x"), "--layers", "2")
    assert isinstance(result.exception, ConfigError)
    assert "would leave none of 2" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_cli_prune_fits_target_memory_at_level_when_target_budget_given(app, tiny_llama_dir, tmp_path):
    from edgekit.plan import plan_level
    from edgekit.targets import load_target, resolve_target_path

    text = resolve_target_path("raspberry-pi-5").read_text()
    profile = tmp_path / "tight.toml"  # 69.5 MiB: the tiny model needs 69.8 MiB at Q4_K_M
    profile.write_text(text.replace('name = "raspberry-pi-5"', 'name = "tight"').replace("5000", "69.5", 1))
    target = load_target(profile)
    source = load_model(tiny_llama_dir)
    assert not plan_level(source.config, target, "Q4_K_M").fits
    out = tmp_path / "fit"
    args = [str(tiny_llama_dir), "-o", str(out), "--target", str(profile), "--quant", "Q4_K_M", "--round-to", "1"]
    result = _run(app, *args)
    assert result.exit_code == 0, result.output
    pruned = load_model(out)
    assert plan_level(pruned.config, target, "Q4_K_M").fits
    assert count_parameters(pruned) < count_parameters(source)


@pytest.mark.parametrize(
    ("level", "round_to"), [("Q4_K_M", 256), ("q5_k_m", 256), ("Q6_K", 256), ("Q8_0", 1), ("F16", 1), (None, 1)]
)
def test_default_round_to_is_256_only_when_level_is_a_k_quant(level, round_to):
    from edgekit.prune.job import default_round_to

    assert default_round_to(level) == round_to


def test_cli_prune_rounds_to_256_by_default_when_target_level_is_a_k_quant(app, tiny_llama_dir, tmp_path):
    from edgekit.plan import plan_level
    from edgekit.targets import load_target, resolve_target_path

    text = resolve_target_path("raspberry-pi-5").read_text()
    profile = tmp_path / "snug.toml"  # 69.7 MiB: the tiny model needs 69.84 MiB at Q4_K_M, with FFN 256 69.61
    profile.write_text(text.replace('name = "raspberry-pi-5"', 'name = "snug"').replace("5000", "69.7", 1))
    out = tmp_path / "k"
    args = [str(tiny_llama_dir), "-o", str(out), "--target", str(profile), "--quant", "Q4_K_M", "--budget-on", "ffn"]
    result = _run(app, *args)
    assert result.exit_code == 0, result.output
    pruned = load_model(out)
    assert pruned.config.intermediate_size == 256  # a multiple of 256, not the 353 an unrounded budget keeps
    assert plan_level(pruned.config, load_target(profile), "Q4_K_M").fits
