"""``edgekit prune``: structured pruning by importance, to ratios or a budget, with distillation recovery."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgekit.cli import options as opt

console = Console()


def _source(model: str) -> str:
    if model == "demo":
        from edgekit.demo import demo_teacher

        return str(demo_teacher())
    from edgekit.models import check_architecture, load_config

    check_architecture(load_config(model), model)
    return model


def prune(
    model: str = opt.model_argument("Weights as safetensors."),
    out: Path = opt.out_option(None, "The pruned HF model (needed unless --analyze only)."),
    heads: float = typer.Option(0.0, "--heads", help="Fraction of KV groups removed (each with its query heads)."),
    query_heads: float = typer.Option(
        0.0, "--query-heads", help="Fraction of query heads removed inside every KV group (groups stay)."
    ),
    ffn: float = typer.Option(0.0, "--ffn", help="Fraction of FFN channels removed (gate/up/down together)."),
    layers: int = typer.Option(0, "--layers", help="Number of whole decoder layers removed."),
    hidden: float = typer.Option(
        0.0, "--hidden", help="Fraction of hidden width removed (embeddings, norms, every projection, lm_head)."
    ),
    params: str = typer.Option(None, "--params", help="Budget: at most this many parameters, e.g. 2.5M or 1.1B."),
    target: str = opt.target_option(detail="Budget: fit its memory at --quant."),
    level: str = opt.quant_option(None, "With --target: the level the budget is for, e.g. Q4_K_M."),
    budget_on: str = typer.Option(
        "ffn,hidden",
        "--budget-on",
        help="Structures a budget shrinks, by one common ratio: ffn,heads,query_heads,hidden.",
    ),
    importance: str = typer.Option(
        "activation", "--importance", "-i", help="activation | magnitude | taylor | block | loo (see docs/pruning.md)."
    ),
    round_to: int = typer.Option(
        None, "--round-to", help="Kept sizes are multiples of this (default: 256 for a K-quant --quant, else 1)."
    ),
    calibration: Path = opt.calibration_option("Importance is scored on it."),
    calibration_sequences: int = typer.Option(16, "--calibration-sequences", help="Rows of 256 tokens to score on."),
    recover_steps: int = typer.Option(
        0, "--recover-steps", help="Distillation steps from the unpruned model after each pruning step (0: none)."
    ),
    iterations: int = typer.Option(1, "--iterations", help="Reach the final shape in this many prune(+recover) steps."),
    sparsity: float = typer.Option(0.0, "--sparsity", help="Then zero this fraction of projection weights (storage)."),
    two_four: bool = typer.Option(
        False, "--two-four", "--2-4", help="Then apply 2:4 semi-structured sparsity (storage, no speedup)."
    ),
    gguf_check: bool = typer.Option(
        True, "--gguf-check/--no-gguf-check", help="Refuse shapes llama.cpp cannot load (skip for ONNX-only use)."
    ),
    analyze: bool = typer.Option(
        False, "--analyze", help="Print per-layer/head/channel scores; save a plot and every score as JSON."
    ),
    plot: Path = typer.Option(None, "--plot", help="Where --analyze saves its PNG (default: OUT/importance.png)."),
    ignore_resources: bool = opt.ignore_resources_option(),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    dtype: str = opt.dtype_option(),
    save_dtype: str = typer.Option(
        None, "--save-dtype", help="Dtype of the saved model: float32, bfloat16, float16 (default: the source's)."
    ),
) -> None:
    """Remove attention heads, FFN channels, layers or hidden width by importance and save an ordinary HF model.

    Say what to remove as ratios (--ffn 0.5 --heads 0.25 --layers 2) or as a budget (--params 2.5M, or --target raspberry-pi-5 --quant Q4_K_M: the gentlest uniform ratio over --budget-on that fits). Heads go by whole KV groups or evenly inside groups, so num_heads stays a multiple of num_kv_heads. Sizes are rounded to --round-to (256 keeps every row K-quant friendly).

    Pruning hurts; recovery wins it back: --recover-steps N distills from the unpruned model after each of --iterations steps (Minitron order: distill → prune → recover → quantize). --analyze shows the scores first (with no ratios or budget it only analyzes). --sparsity and --two-four keep shapes and save only storage (compressed size), not time on dense kernels.

    Memory: the model stays in its checkpoint precision (bf16 stays bf16) and is scored in fp32 one layer at a time, and the pruned model is built in the same dtype while the source is freed layer by layer, with no fp32 copy: measured peak 2.4x the bf16 checkpoint for a 1 B model, 6.6x before (docs/pruning.md). --importance taylor and --recover-steps need fp32 copies (gradients, training).

    Example: edgekit prune demo --out pruned --params 2.6M --importance taylor --recover-steps 100
    """
    from edgekit.errors import ConfigError, Problem
    from edgekit.prune.job import Budget, option_problems, parse_count, schedule_problems

    ratios = {"ffn": ffn, "heads": heads, "query_heads": query_heads, "hidden": hidden}
    budget = None
    problems = []
    if params or target or level:
        try:
            count = parse_count(params) if params else None
        except ValueError as exc:
            problems.append(Problem("edgekit prune", "--params", str(exc)))
            count = None
        structures = tuple(s.strip() for s in budget_on.split(",") if s.strip())
        budget = Budget(count, target, level, structures)
    cutting = budget is not None or any(ratios.values()) or layers or sparsity or two_four
    if not cutting and not analyze:
        problems.append(Problem("edgekit prune", "options", "nothing to do: give ratios, a budget, or --analyze"))
    if cutting and out is None:
        problems.append(Problem("edgekit prune", "--out", "required to save the pruned model"))
    problems += option_problems(ratios, layers, budget, importance)
    problems += schedule_problems(iterations, recover_steps, sparsity, two_four)
    if save_dtype is not None and save_dtype not in ("float32", "bfloat16", "float16"):
        problems.append(Problem("edgekit prune", "--save-dtype", f"{save_dtype!r}; choose float32, bfloat16, float16"))
    if problems:
        raise ConfigError(problems)
    from edgekit.loading import using

    load = opt.load_options(revision, cache_dir, trust_remote_code, dtype)
    with using([model], load):
        source = _source(model)
    with using([model, source], load):
        _check_resources(source, out, ignore_resources)
        _prune(source, out, analyze, importance, calibration, calibration_sequences, plot, cutting, ratios, layers,
               round_to, level, budget, recover_steps, iterations, sparsity, two_four, gguf_check, save_dtype)  # fmt: skip


def _check_resources(source: str, out: Path | None, ignore: bool) -> None:
    """Refuse before loading anything if this machine cannot hold pruning (``edgekit.resources``)."""
    from edgekit import resources
    from edgekit.models import load_config
    from edgekit.pipeline.preflight_resources import check_command

    check_command("prune", [resources.prune(load_config(source))], out, ignore)


def _prune(source, out, analyze, importance, calibration, calibration_sequences, plot, cutting, ratios, layers,
           round_to, level, budget, recover_steps, iterations, sparsity, two_four, gguf_check, save_dtype) -> None:  # fmt: skip
    from edgekit.lowmem import load_resident
    from edgekit.models import load_config, load_tokenizer
    from edgekit.prune.job import default_round_to, prune_folder, resolve_plan

    config = load_config(source)  # a plan transformers would refuse fails here, before any weights load
    plan = resolve_plan(config, ratios, layers, round_to or default_round_to(level), budget) if cutting else None
    loaded, tokenizer = load_resident(source), load_tokenizer(source)
    if analyze:
        plot = plot or (out or Path(".")) / "importance.png"
        _analyze(loaded, tokenizer, importance, calibration, calibration_sequences, plot)
    if not cutting:
        return
    _print_plan(loaded.config, plan)
    report = prune_folder(
        source,
        out,
        plan,
        criterion=importance,
        calibration=calibration,
        calibration_sequences=calibration_sequences,
        recover_steps=recover_steps,
        iterations=iterations,
        sparsity=sparsity,
        two_four=two_four,
        model=loaded,
        tokenizer=tokenizer,
        check_gguf=gguf_check,
        release_source=True,  # nothing here reads the unpruned model afterwards
        save_dtype=save_dtype,
    )
    _print_report(report, source, out)


def _analyze(model, tokenizer, importance: str, calibration, rows: int, plot: Path) -> None:
    from edgekit.fileio import write_json_atomic
    from edgekit.prune import score
    from edgekit.prune.analyze import hidden_quantiles, plot_scores, scores_dict, summary_rows
    from edgekit.prune.job import calibration_rows

    scores = score(model, calibration_rows(tokenizer, calibration, rows), importance)
    table = Table(title=f"importance ({importance}; higher = keep)")
    for col in ("layer", "layer score", "query heads", "ffn min", "ffn median", "ffn max"):
        table.add_column(col, justify="right")
    for r in summary_rows(scores):
        table.add_row(
            str(r["layer"]),
            f"{r['layer_score']:.4g}",
            str(r["heads"]),
            f"{r['ffn_min']:.3g}",
            f"{r['ffn_median']:.3g}",
            f"{r['ffn_max']:.3g}",
        )
    console.print(table)
    q = hidden_quantiles(scores)
    console.print("hidden channels: " + ", ".join(f"{k} {v:.3g}" for k, v in q.items()))
    console.print(f"[green]wrote[/] {plot_scores(scores, plot, title=f'importance: {importance}')}")
    detail = write_json_atomic(plot.with_suffix(".json"), {"criterion": importance, **scores_dict(scores)})
    console.print(f"[green]wrote[/] {detail} (every layer, head and channel score)")


def _print_plan(config, plan) -> None:
    from edgekit.plan import count_params
    from edgekit.prune.compat import k_quant_misfits
    from edgekit.prune.plan import STRUCTURES, planned_config

    cut = [f"{name} {getattr(plan, name):.1%}" for name in STRUCTURES if getattr(plan, name)]
    cut += [f"layers {plan.layers}"] if plan.layers else []
    shape = planned_config(config, plan)
    console.print(
        f"plan: remove {', '.join(cut) or 'nothing'} (round to {plan.round_to}) → "
        f"{count_params(shape):,} parameters predicted"
    )
    misfits = k_quant_misfits(shape)
    if misfits and not k_quant_misfits(config):
        sizes = ", ".join(f"{name} {width}" for name, width in misfits.items())
        console.print(
            f"[yellow]note:[/] {sizes} not multiples of 256: GGUF K-quants (Q4_K_M, ...) will fall back to F16 "
            "for those matrices; use --round-to 256 to keep them quantizable"
        )


def _print_report(report: dict, source: str, out: Path) -> None:
    shape = report["steps"][-1]["shape"]
    table = Table(title=f"pruned {source} → {out}")
    for col in ("", "parameters", "held-out ppl"):
        table.add_column(col, justify="right")
    for name in ("before", "after"):
        table.add_row(name, f"{report[name]['parameters']:,}", f"{report[name]['heldout_ppl']:.2f}")
    console.print(table)
    console.print("shape: " + ", ".join(f"{k} {v}" for k, v in shape.items()))
    if report["projection_sparsity"]:
        console.print(f"projection sparsity {report['projection_sparsity']:.1%} (storage only; same dense speed)")
    console.print(f"[green]wrote[/] {out}")


def register(app: typer.Typer) -> None:
    """Add ``prune`` to the CLI."""
    app.command("prune", cls=opt.Command)(prune)
