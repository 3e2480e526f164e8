"""Iterative pruning (Minitron / Sheared-LLaMA style): prune a step, recover by distillation, repeat.

Removing everything at once throws away structures whose importance would have been re-ranked once
the model adapted. The schedule moves from the original shape to the plan's final shape in
``iterations`` equal steps of absolute size, re-scoring on the current (recovered) model each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from edgekit.prune.plan import PrunePlan, planned_config
from edgekit.prune.surgery import group_size

Recover = Callable[[Any], Any]  # model -> recovered model


def _between(start: int, end: int, fraction: float) -> int:
    return round(start - (start - end) * fraction)


def step_plan(current, start, final, k: int, n: int) -> PrunePlan:
    """The plan taking ``current`` to step ``k`` of ``n`` on the way from ``start`` to ``final`` configs.

    Intermediate sizes are unrounded; the last step lands exactly on ``final`` (already rounded).
    """
    f = k / n

    def ratio(now: int, begin: int, end: int) -> float:
        return 1.0 - _between(begin, end, f) / now

    return PrunePlan(
        ffn=ratio(current.intermediate_size, start.intermediate_size, final.intermediate_size),
        heads=ratio(current.num_key_value_heads, start.num_key_value_heads, final.num_key_value_heads),
        query_heads=ratio(group_size(current), group_size(start), group_size(final)),
        hidden=ratio(current.hidden_size, start.hidden_size, final.hidden_size),
        layers=current.num_hidden_layers - _between(start.num_hidden_layers, final.num_hidden_layers, f),
    )


def iterative_prune(
    model,
    plan: PrunePlan,
    calibration: torch.Tensor | None,
    *,
    criterion: str = "activation",
    iterations: int = 1,
    recover: Recover | None = None,
    check_gguf: bool = True,
    release_source: bool = False,
) -> tuple[Any, list[dict]]:
    """Prune to ``plan``'s final shape in ``iterations`` steps, calling ``recover`` after each step.

    Returns (model, one report per step). With ``iterations=1`` and no ``recover`` this is
    ``prune_model``; the result has exactly ``planned_config(model.config, plan)``'s shape.
    Without ``recover`` the result keeps ``model``'s dtype; with it, steps are cut to float32 so
    that recovery trains in fp32. ``release_source`` frees ``model`` while it is cut (intermediate
    models are always freed).
    """
    import torch

    from edgekit.errors import UnsupportedModelError
    from edgekit.prune import prune_model
    from edgekit.prune.compat import gguf_problems

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    start, final = model.config, planned_config(model.config, plan)
    if check_gguf and (problems := gguf_problems(final)):  # intermediate shapes are never exported
        raise UnsupportedModelError(problems[0])
    reports = []
    dtype = torch.float32 if recover is not None else None
    for k in range(1, iterations + 1):
        step = step_plan(model.config, start, final, k, iterations)
        release = release_source or k > 1
        model, report = prune_model(
            model, step, calibration, criterion, check_gguf=False, dtype=dtype, release_source=release
        )
        if recover is not None:
            model = recover(model)
        reports.append({"step": k, **report})
    return model, reports


def distill_recovery(
    teacher, train_ids: torch.Tensor, steps: int, lr: float = 3e-4, batch_size: int = 8, heldout_ids=None, seed: int = 0
) -> Recover:
    """A ``recover`` callable: ``steps`` of distillation from ``teacher`` on rows ``train_ids`` [n, seq].

    Each call uses the next seed, so successive recovery rounds see different batches.
    """
    from dataclasses import replace

    from edgekit.distill import DistillConfig, distill

    warmup = min(DistillConfig.warmup_steps, max(1, steps // 10))
    config = DistillConfig(
        steps=steps, batch_size=batch_size, lr=lr, seq_len=train_ids.shape[1], seed=seed, warmup_steps=warmup
    )
    calls = [0]

    def recover(model):
        from edgekit.distill.teacher import teacher_compute

        round_config = replace(config, seed=config.seed + calls[0])
        calls[0] += 1
        with teacher_compute(teacher):  # a bf16-resident teacher computes in fp32 (exact); no-op for fp32
            result = distill(teacher, model, train_ids, round_config, heldout_ids=heldout_ids, progress=False)
        return result.student.eval()

    return recover
