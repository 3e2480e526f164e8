"""Students derived from the teacher: fewer layers and/or narrower, initialised from its weights.

Taking every k-th layer of the teacher (as DistilBERT did) starts the student far closer to the
teacher than random initialisation, so a short distillation recovers most of the quality.
"""

from __future__ import annotations

import copy

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

    ``init="teacher"`` copies the kept layers' weights (sliced to the new widths); ``"random"``
    initialises from scratch (the baseline distillation must beat).
    """
    from transformers import AutoModelForCausalLM

    check_student_shape(teacher.config, num_layers, hidden_size)
    config = copy.deepcopy(teacher.config)
    t_layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    config.num_hidden_layers = num_layers or t_layers
    config.hidden_size = hidden_size or config.hidden_size
    config.intermediate_size = intermediate_size or config.intermediate_size
    config.num_attention_heads = num_heads or config.num_attention_heads
    config.num_key_value_heads = num_kv_heads or config.num_key_value_heads
    config.head_dim = head_dim
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in uniform_layers(t_layers, config.num_hidden_layers)]
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if init == "teacher":
        _copy_weights(teacher, student, uniform_layers(t_layers, config.num_hidden_layers))
    elif init != "random":
        raise ValueError(f"init must be 'teacher' or 'random', not {init!r}")
    return student.eval()


def _copy_weights(teacher, student, kept: list[int]) -> None:
    """Copy every tensor, mapping student layer i to teacher layer kept[i] and slicing to shape."""
    source = teacher.state_dict()
    with torch.no_grad():
        for name, target in student.state_dict().items():
            src_name = name
            parts = name.split(".")
            if "layers" in parts:
                idx = parts.index("layers") + 1
                parts[idx] = str(kept[int(parts[idx])])
                src_name = ".".join(parts)
            tensor = source[src_name]
            target.copy_(tensor[tuple(slice(0, n) for n in target.shape)])
