"""Students derived from the teacher: fewer layers and/or narrower, initialised from its weights.

Taking every k-th layer of the teacher (as DistilBERT did) starts the student far closer to the
teacher than random initialisation, so a short distillation recovers most of the quality.
"""

from __future__ import annotations

import torch


def uniform_layers(n_teacher: int, n_student: int) -> list[int]:
    """Indices of teacher layers kept, spread evenly and always keeping the first and last."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def check_student_shape(teacher_config, num_layers: int | None, hidden_size: int | None) -> None:
    """ValueError for a student no smaller than the teacher can derive (asked here and by the build's preflight).

    Layers are picked from the teacher's and widths sliced from its matrices, so neither may exceed the teacher's.
    """
    t_layers, t_hidden = teacher_config.num_hidden_layers, teacher_config.hidden_size
    if num_layers is not None and not 1 <= num_layers <= t_layers:
        raise ValueError(f"student layers {num_layers} must be between 1 and the teacher's {t_layers}")
    if hidden_size is not None and not 1 <= hidden_size <= t_hidden:
        raise ValueError(f"student hidden size {hidden_size} must be between 1 and the teacher's {t_hidden}")


def derive_student(
    teacher,
    *,
    num_layers: int | None = None,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    init: str = "teacher",
    seed: int = 0,
):
    """A model of the teacher's family with the given (smaller) shape.

    ``init="teacher"`` keeps evenly spread teacher layers and the first channels, heads and KV
    groups, through the same family-spec surgery pruning uses (so every family, fused projections and
    extra norms included, is copied whole); ``"random"`` initialises from scratch (the baseline
    distillation must beat). Students are built only for families in the edgekit.arch registry.
    """
    from edgekit.arch import family_of
    from edgekit.prune.surgery import apply_keep, pruned_config

    if init not in ("teacher", "random"):
        raise ValueError(f"init must be 'teacher' or 'random', not {init!r}")
    family_of(teacher.config)
    check_student_shape(teacher.config, num_layers, hidden_size)
    keep = _first_structures(
        teacher.config, num_layers, hidden_size, intermediate_size, num_heads, num_kv_heads, init == "random"
    )
    if init == "teacher":
        return apply_keep(teacher, keep, dtype=torch.float32)  # students train in fp32 whatever the teacher
    from transformers import AutoModelForCausalLM

    config = pruned_config(teacher.config, keep)
    config.rms_norm_eps = teacher.config.rms_norm_eps  # no channels removed from a trained norm
    for name, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
        setattr(config, name, value or getattr(config, name))
    config.num_attention_heads = num_heads or config.num_attention_heads
    config.num_key_value_heads = num_kv_heads or config.num_key_value_heads
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _first_structures(config, layers, hidden, inter, heads, kv, lenient: bool):
    """A Keep of evenly spread layers and the first hidden/FFN channels, KV groups and heads per group.

    Raises ValueError when a size exceeds the teacher's (unless ``lenient``: random init only needs
    the layer selection, its widths are set directly)."""
    from edgekit.prune.surgery import Keep, group_size

    c = config
    kv = kv or c.num_key_value_heads
    heads = heads or (kv * group_size(c) if kv != c.num_key_value_heads else c.num_attention_heads)
    sizes = {"hidden_size": hidden or c.hidden_size, "intermediate_size": inter or c.intermediate_size}
    limits = {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size}
    per_group = max(1, heads // kv)
    if not lenient:
        too_big = [f"{k}={v} > {limits[k]}" for k, v in sizes.items() if v > limits[k]]
        if kv > c.num_key_value_heads or heads % kv or per_group > group_size(c):
            too_big.append(
                f"heads={heads}/kv_heads={kv} is not a subset of {c.num_attention_heads}/{c.num_key_value_heads}"
            )
        if too_big:
            raise ValueError("a teacher-initialised student must be no wider than its teacher: " + ", ".join(too_big))
    kv, per_group = min(kv, c.num_key_value_heads), min(per_group, group_size(c))
    kept = uniform_layers(c.num_hidden_layers, layers or c.num_hidden_layers)
    n = len(kept)
    in_group = None if per_group == group_size(c) else [torch.arange(per_group).expand(kv, per_group)] * n
    return Keep(
        layers=kept,
        ffn=[torch.arange(min(sizes["intermediate_size"], limits["intermediate_size"]))] * n,
        groups=[torch.arange(kv)] * n,
        hidden=torch.arange(min(sizes["hidden_size"], limits["hidden_size"])),
        heads=in_group,
    )
