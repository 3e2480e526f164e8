"""Checks an export runs before it writes anything: the folder, the architecture, the weight shapes.

Shapes are read from the safetensors headers (no weights loaded) and compared with what
``config.json`` implies, so a folder whose config and weights disagree fails with one line naming
the tensor, instead of a long ``state_dict`` traceback from transformers or a GGUF that llama.cpp
refuses later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError

_MAX_LISTED = 3  # problems named in the one-line message; the count says how many more


def check_source(model_dir: Path) -> Any:
    """The HF config of ``model_dir`` after checking folder, architecture and weight shapes."""
    from edgekit.models import check_architecture, load_config

    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    if not (model_dir / "config.json").is_file():
        raise InputError(model_dir, "no config.json: not a Hugging Face model folder")
    config = load_config(model_dir)
    check_architecture(config, model_dir)
    check_shapes(model_dir, config)
    return config


def expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, as the family spec (edgekit.arch) derives it from the config."""
    from edgekit.arch import family_of, tensor_shapes

    return tensor_shapes(family_of(config), config)


def stored_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the headers of the folder's safetensors files (the shards its index lists)."""
    from safetensors import safe_open

    from edgekit.export.checkpoint import checkpoint_files

    shapes: dict[str, tuple[int, ...]] = {}
    for path in checkpoint_files(model_dir):  # a shard the index lists but the folder lacks is named here
        try:
            with safe_open(str(path), "np") as fh:
                for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shapes[name] = tuple(fh.get_slice(name).get_shape())
        except Exception as exc:  # safetensors raises its own error types for damaged headers
            raise InputError(path, f"unreadable safetensors header ({exc})") from None
    return shapes


def shape_problems(config: Any, stored: dict[str, tuple[int, ...]]) -> list[str]:
    """Every disagreement between the stored tensors and the config, one short phrase each."""
    problems = []
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if kv_heads < 1 or heads % kv_heads:
        problems.append(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    expected = expected_shapes(config)
    optional = set()  # biases are declared only when the config says the model has them
    if getattr(config, "tie_word_embeddings", False):
        optional.add("lm_head.weight")  # the embedding matrix is reused as the output layer
    for name, shape in expected.items():
        if name not in stored:
            if name not in optional:
                problems.append(f"{name} is missing")
        elif stored[name] != shape:
            problems.append(f"{name} has shape {list(stored[name])}, config.json implies {list(shape)}")
    for name in stored:
        if name not in expected and not name.endswith("rotary_emb.inv_freq"):
            problems.append(f"{name} is not a weight of a {config.num_hidden_layers}-layer {config.model_type}")
    return problems


def check_shapes(model_dir: Path, config: Any) -> None:
    """Raise one InputError listing the first problems if weights and config disagree."""
    problems = shape_problems(config, stored_shapes(model_dir))
    if problems:
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise InputError(model_dir, "weights do not match config.json: " + "; ".join(problems[:_MAX_LISTED]) + more)
