"""Prune a saved model folder end to end: plan (ratios or budget) → score → cut → recover → save.

This is what ``edgekit prune`` calls; options are checked here, all problems reported at once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, Problem
from edgekit.prune.plan import STRUCTURES, PrunePlan

SOURCE = "edgekit prune"
CRITERIA_NAMES = ("activation", "magnitude", "taylor", "block", "loo")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


@dataclass(frozen=True)
class Budget:
    """A size to reach instead of fixed ratios: at most ``params`` weights, or fit ``target`` at ``level``."""

    params: int | None = None
    target: str | None = None
    level: str | None = None
    structures: tuple[str, ...] = ("ffn", "hidden")


def parse_count(text: str) -> int:
    """'2.5M' -> 2_500_000; accepts k, M, B (or G) suffixes and plain integers."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgG]?)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a count like 2500000, 2.5M or 1.1B")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])


def schedule_problems(iterations: int, recover_steps: int, sparsity: float, two_four: bool) -> list[Problem]:
    """Invalid schedule or sparsity options."""
    problems = []
    if iterations < 1:
        problems.append(Problem(SOURCE, "--iterations", f"{iterations} must be >= 1"))
    if recover_steps < 0:
        problems.append(Problem(SOURCE, "--recover-steps", f"{recover_steps} must be >= 0"))
    if not 0.0 <= sparsity < 1.0:
        problems.append(Problem(SOURCE, "--sparsity", f"{sparsity} must be in [0, 1)"))
    if sparsity and two_four:
        problems.append(Problem(SOURCE, "--sparsity/--two-four", "choose one sparsity pattern"))
    return problems


def option_problems(ratios: dict[str, float], layers: int, budget: Budget | None, criterion: str) -> list[Problem]:
    """Every invalid option (the caller raises them together as one ConfigError)."""
    problems = [Problem(SOURCE, f"--{k.replace('_', '-')}", f"{v} must be in [0, 1)") for k, v in ratios.items()]
    problems = [p for p, v in zip(problems, ratios.values(), strict=True) if not 0.0 <= v < 1.0]
    if layers < 0:
        problems.append(Problem(SOURCE, "--layers", f"{layers} must be >= 0"))
    if criterion not in CRITERIA_NAMES:
        problems.append(Problem(SOURCE, "--importance", f"{criterion!r}; choose from {', '.join(CRITERIA_NAMES)}"))
    if budget is not None:
        if budget.params is not None and budget.target:
            problems.append(Problem(SOURCE, "--params", "give a parameter budget or --target/--quant, not both"))
        if bool(budget.target) != bool(budget.level):
            problems.append(Problem(SOURCE, "--target/--quant", "a target budget needs both a target and a level"))
        if budget.level:
            from edgekit.formats import level as level_info

            try:
                level_info(budget.level)
            except KeyError as exc:
                problems.append(Problem(SOURCE, "--quant", str(exc).strip("'\"")))
        bad = sorted(set(budget.structures) - set(STRUCTURES))
        if bad or not budget.structures:
            problems.append(Problem(SOURCE, "--budget-on", f"{bad or 'nothing'}; choose from {', '.join(STRUCTURES)}"))
        if any(ratios[s] for s in budget.structures if s in ratios):
            problems.append(Problem(SOURCE, "--budget-on", "a budget sets these ratios itself; drop the ratio options"))
    return problems


def default_round_to(level: str | None) -> int:
    """256 when the level is a K-quant (rows must hold whole 256-weight super-blocks), else 1."""
    from edgekit.formats import LEVELS

    info = next((q for name, q in LEVELS.items() if level and name.lower() == level.lower()), None)
    return 256 if info is not None and info.k_quant else 1


def resolve_plan(config, ratios: dict[str, float], layers: int, round_to: int, budget: Budget | None) -> PrunePlan:
    """The plan from fixed ratios, or the gentlest one meeting ``budget`` (ConfigError when none can)."""
    from edgekit.prune.plan import budget_plan, params_fit, target_fit

    if layers >= config.num_hidden_layers:
        raise ConfigError([Problem(SOURCE, "--layers", f"{layers} would leave none of {config.num_hidden_layers}")])
    if round_to < 1:
        raise ConfigError([Problem(SOURCE, "--round-to", f"{round_to} must be >= 1")])
    base = PrunePlan(layers=layers, round_to=round_to, **ratios)
    if budget is None:
        return _savable(config, base)
    if budget.params is not None:
        fits, what = params_fit(budget.params), f"{budget.params:,} parameters"
    else:
        from edgekit.formats import level as level_info
        from edgekit.targets import load_target

        try:
            level = level_info(budget.level).name
        except KeyError as exc:
            raise ConfigError([Problem(SOURCE, "--quant", str(exc).strip("'\""))]) from None
        fits, what = target_fit(load_target(budget.target), level), f"{budget.target} at {level}"
    try:
        return _savable(config, budget_plan(config, fits, budget.structures, base))
    except ValueError as exc:
        raise ConfigError([Problem(SOURCE, "budget", f"{what}: {exc}")]) from None


def _savable(config, plan: PrunePlan) -> PrunePlan:
    """``plan``, or a ConfigError (before any weights are read) when transformers would refuse its shape."""
    from edgekit.prune.compat import transformers_problems
    from edgekit.prune.plan import planned_config

    problems = transformers_problems(planned_config(config, plan))
    if problems:
        raise ConfigError([Problem(SOURCE, "--heads/--query-heads/--hidden", problems[0])])
    return plan


def calibration_rows(tokenizer, path: Path | None, rows: int, seq_len: int = 256):
    """Rows [rows, seq_len] of calibration text: the user's file or the built-in corpus's training split."""
    from edgekit.data import builtin_documents, load_texts, pack, split_documents, tokenize_documents

    docs = load_texts(path) if path else split_documents(builtin_documents())[0]
    return pack(tokenize_documents(tokenizer, docs), seq_len, rows)


def heldout_ppl(model, tokenizer, rows: int = 8) -> float:
    """Perplexity on the built-in held-out split (the yardstick the docs' numbers use).

    One row at a time in fp32 compute (``edgekit.lowmem``): the model stays in its own precision and
    only one row's [seq, vocab] logits exist at once.
    """
    import math

    import torch

    from edgekit.data import heldout_set
    from edgekit.lowmem import fp32_compute
    from edgekit.prune.importance import calibration_loss

    with torch.no_grad(), fp32_compute(model):
        return math.exp(calibration_loss(model, heldout_set(tokenizer, 256, rows), batch=1))


def prune_folder(
    source: str | Path,
    out: Path,
    plan: PrunePlan,
    *,
    criterion: str = "activation",
    calibration: Path | None = None,
    calibration_sequences: int = 16,
    recover_steps: int = 0,
    iterations: int = 1,
    sparsity: float = 0.0,
    two_four: bool = False,
    model=None,
    tokenizer=None,
    check_gguf: bool = True,
    release_source: bool | None = None,
    save_dtype: str | None = None,
) -> dict[str, Any]:
    """Prune the model at ``source`` by ``plan`` and save it (with its tokenizer) to ``out``; returns a report.

    With ``recover_steps`` each of the ``iterations`` steps is followed by distillation from the
    unpruned model (the teacher) on the built-in corpus. Sparsity options run last (storage only).

    Memory (no recovery): the model is loaded in its checkpoint precision (``lowmem.load_resident``:
    bf16 stays bf16) and scored in fp32 compute one layer at a time; surgery writes the pruned model
    in the same dtype, then frees the source (``release_source``, default: when this function loaded
    the model). Peak ≈ source + pruned model in the source dtype, or source + its largest unit (the
    embedding/LM head) in fp32 + one row's logits while scoring, whichever is larger (measured in
    docs/pruning.md). The file is saved in the source dtype unless
    ``save_dtype`` (float32 | bfloat16 | float16) asks otherwise. With recovery the pruned model is
    trained, so it is cut to float32 (and saved so) and a frozen copy of the source teaches it with
    fp32 arithmetic (``distill.teacher``).
    """
    from edgekit.fileio import write_json_atomic
    from edgekit.lowmem import load_resident
    from edgekit.models import count_parameters, load_tokenizer, save_model
    from edgekit.prune.schedule import distill_recovery, iterative_prune
    from edgekit.prune.sparsity import magnitude_sparsify, semi_structured_2_4

    if release_source is None:
        release_source = model is None
    model = model if model is not None else load_resident(source)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(source)
    calib = calibration_rows(tokenizer, calibration, calibration_sequences)
    before = {"parameters": count_parameters(model), "heldout_ppl": heldout_ppl(model, tokenizer)}
    recover = None
    if recover_steps:
        from edgekit.data import training_set

        teacher = _frozen_copy(model)  # the unpruned model teaches its pruned self
        recover = distill_recovery(teacher, training_set(tokenizer, 256, 512), recover_steps)
    pruned, steps = iterative_prune(
        model,
        plan,
        calib,
        criterion=criterion,
        iterations=iterations,
        recover=recover,
        check_gguf=check_gguf,
        release_source=release_source,
    )
    del model
    if save_dtype is not None:
        import torch

        pruned.to(getattr(torch, save_dtype))
    sparse = semi_structured_2_4(pruned) if two_four else magnitude_sparsify(pruned, sparsity) if sparsity else 0.0
    report = {
        "source": str(source),
        "plan": asdict(plan),
        "criterion": criterion,
        "before": before,
        "after": {"parameters": count_parameters(pruned), "heldout_ppl": heldout_ppl(pruned, tokenizer)},
        "projection_sparsity": sparse,
        "recover_steps": recover_steps,
        "steps": steps,
    }
    save_model(pruned, tokenizer, out)
    write_json_atomic(Path(out) / "prune-report.json", report)
    return report


def _frozen_copy(model):
    import copy

    return copy.deepcopy(model).eval()
