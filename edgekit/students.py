"""A smaller student of the teacher's family that fits a parameter budget (shape only, no weights).

Depth and width shrink together, by the same factor in 2% steps, until the exact parameter count (edgekit.plan)
is within the budget. Widths stay multiples of 256 so K-quants apply (llama.cpp QK_K = 256); the
head size is kept, heads follow the width, and the teacher's query-per-KV-head grouping is kept where
it divides. The vocabulary is the teacher's, so logit distillation stays possible.
"""

from __future__ import annotations

import copy
from typing import Any

from edgekit.arch import head_dim as arch_head_dim
from edgekit.arch import keep_layers
from edgekit.distill.student import uniform_layers
from edgekit.plan import count_params

WIDTH_MULTIPLE = 256  # llama.cpp K-quant super-block: rows must be a multiple of it
SCALE_STEP = 0.98  # each try shrinks depth and width by 2%


def _round_width(value: float) -> int:
    return max(WIDTH_MULTIPLE, int(value) // WIDTH_MULTIPLE * WIDTH_MULTIPLE)


def shaped_config(config, layers: int, hidden: int, intermediate: int) -> Any:
    """``config`` with a new depth and width; heads follow the width at the teacher's head size."""
    c = copy.deepcopy(config)
    head_dim = arch_head_dim(config)
    heads = max(1, hidden // head_dim)
    group = max(1, config.num_attention_heads // config.num_key_value_heads)
    kv = max(1, heads // group)
    while heads % kv:  # the grouping must divide the heads
        kv -= 1
    keep_layers(c, uniform_layers(config.num_hidden_layers, layers))  # per-layer lists follow the kept layers
    c.hidden_size, c.intermediate_size = hidden, intermediate
    c.num_attention_heads, c.num_key_value_heads, c.head_dim = heads, kv, head_dim
    return c


def shape_of(config) -> dict[str, int]:
    """The fields a student shape is described by, plus its exact parameter count."""
    return {
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "intermediate": config.intermediate_size,
        "heads": config.num_attention_heads,
        "kv_heads": config.num_key_value_heads,
        "head_dim": arch_head_dim(config),
        "params": count_params(config),
    }


def student_shape(config, max_params: int) -> dict[str, int] | None:
    """The largest shrunk shape with at most ``max_params`` parameters, or None if even the smallest is too big."""
    scale = 1.0
    while True:
        layers = max(1, round(config.num_hidden_layers * scale))
        c = shaped_config(
            config, layers, _round_width(config.hidden_size * scale), _round_width(config.intermediate_size * scale)
        )
        if count_params(c) <= max_params:
            return shape_of(c)
        if layers == 1 and c.hidden_size == WIDTH_MULTIPLE and c.intermediate_size == WIDTH_MULTIPLE:
            return None
        scale *= SCALE_STEP


def student_config(config, shape: dict[str, int]) -> Any:
    """The HF config of a shape from :func:`student_shape` (for ``edgekit distill --student DIR``)."""
    return shaped_config(config, shape["layers"], shape["hidden"], shape["intermediate"])
