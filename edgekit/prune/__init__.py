"""Structured pruning: importance scores, surgery on HF models, plans, schedules, sparsity."""

from __future__ import annotations

from typing import Any

from edgekit.prune.importance import Scores, score
from edgekit.prune.plan import PrunePlan, budget_plan, planned_config, select
from edgekit.prune.surgery import Keep, apply_keep, pruned_config


def prune_model(
    model,
    plan: PrunePlan,
    calibration_ids=None,
    criterion: str = "activation",
    *,
    check_gguf: bool = True,
    dtype=None,
    release_source: bool = False,
) -> tuple[Any, dict]:
    """Score structures on calibration rows [n, seq], cut by ``plan``; returns (pruned model, report).

    ``check_gguf`` refuses, before any work, a plan whose result llama.cpp could not load. The
    pruned model has ``model``'s dtype unless ``dtype`` says otherwise (float32 for a model that
    will be trained). Memory: scoring keeps ``model`` in its own precision (fp32 compute one layer
    at a time, see ``importance``); surgery adds the pruned model in its dtype, and with
    ``release_source`` frees ``model`` once copied (``model`` is unusable after).
    """
    from edgekit.arch import family_of
    from edgekit.errors import UnsupportedModelError
    from edgekit.models import count_parameters
    from edgekit.prune.compat import gguf_problems, transformers_problems

    family_of(model.config)  # fail closed: only registered families can be cut
    planned = planned_config(model.config, plan)
    if problems := transformers_problems(planned) + (gguf_problems(planned) if check_gguf else []):
        raise UnsupportedModelError(problems[0])
    scores = score(model, calibration_ids, criterion)
    keep = select(scores, plan, model.config)
    if check_gguf and (problems := gguf_problems(pruned_config(model.config, keep))):  # which layers matters
        raise UnsupportedModelError(problems[0])
    before = count_parameters(model)
    pruned = apply_keep(model, keep, dtype=dtype, release_source=release_source)
    c = pruned.config
    report = {
        "criterion": criterion,
        "parameters_before": before,
        "parameters_after": count_parameters(pruned),
        "layers_kept": keep.layers,
        "shape": {
            "layers": c.num_hidden_layers,
            "hidden": c.hidden_size,
            "intermediate": c.intermediate_size,
            "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads,
        },
    }
    return pruned, report


__all__ = [
    "Keep",
    "PrunePlan",
    "Scores",
    "apply_keep",
    "budget_plan",
    "planned_config",
    "prune_model",
    "score",
    "select",
]
