"""Cut structures out of a model of any registered family (edgekit.arch) and return an ordinary HF model.

Instead of editing modules in place (where stale attributes such as head counts or layer indices
break the KV cache or export), a new model is built from the shrunk config and the kept rows and
columns are copied into it. The config then describes the new shapes exactly, so ``save_pretrained``
/ ``from_pretrained`` / ``generate`` and the exporters see a normal model.

Hidden-width pruning changes what RMSNorm averages over (d_new channels instead of d_old). The norm
weights are scaled by sqrt(d_old / d_new) and ``rms_norm_eps`` by d_old / d_new, which makes removing
channels that carry zeros exact, and is the right correction when removed channels are quiet.
Gemma's (1 + w) norms get the same correction on their effective gain. Which tensors exist, where
fused projections are split and which axis each index runs along all come from the family spec.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from edgekit.arch import family_of, head_dim, keep_layers, kv_rows, q_rows
from edgekit.arch.base import FFN, HEAD_DIM, HIDDEN, KV, VOCAB, Q
from edgekit.errors import UnsupportedModelError

__all__ = ["Keep", "apply_keep", "check_keep", "group_size", "head_dim", "keep_everything", "pruned_config"]


@dataclass
class Keep:
    """What survives, in the original model's numbering (all index tensors sorted).

    Every kept layer keeps the same number of FFN channels, KV groups and query heads per group,
    because HF configs describe one size for all layers.
    """

    layers: list[int]
    ffn: list[torch.Tensor]  # per kept layer: FFN channel indices
    groups: list[torch.Tensor]  # per kept layer: KV-group indices (query heads follow their group)
    hidden: torch.Tensor  # hidden dims
    heads: list[torch.Tensor] | None = None  # per kept layer: [kept groups, q per group] in-group positions


def group_size(config) -> int:
    """Query heads per KV group."""
    return config.num_attention_heads // config.num_key_value_heads


def check_keep(config, keep: Keep) -> None:
    """Raise ValueError naming the problem if ``keep`` cannot describe a uniform HF model."""
    n = config.num_hidden_layers
    if not keep.layers or len(set(keep.layers)) != len(keep.layers) or not all(0 <= i < n for i in keep.layers):
        raise ValueError(f"kept layers {keep.layers} must be distinct indices in [0, {n})")
    per_layer = {"ffn": keep.ffn, "groups": keep.groups, **({"heads": keep.heads} if keep.heads else {})}
    limits = {"ffn": config.intermediate_size, "groups": config.num_key_value_heads, "heads": group_size(config)}
    for name, items in per_layer.items():
        if len(items) != len(keep.layers):
            raise ValueError(f"{name}: {len(items)} entries for {len(keep.layers)} kept layers")
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) != 1 or 0 in next(iter(shapes)):
            raise ValueError(f"{name}: every layer must keep the same non-zero count, got shapes {sorted(shapes)}")
        if any(int(t.min()) < 0 or int(t.max()) >= limits[name] for t in items):
            raise ValueError(f"{name}: indices must lie in [0, {limits[name]})")
    if keep.heads and keep.heads[0].shape[0] != len(keep.groups[0]):
        raise ValueError("heads: one row of in-group positions per kept KV group")
    if len(keep.hidden) == 0 or int(keep.hidden.max()) >= config.hidden_size:
        raise ValueError(f"hidden: indices must be a non-empty subset of [0, {config.hidden_size})")


def pruned_config(config, keep: Keep):
    """A copy of ``config`` describing the kept shapes (uniform sizes across layers)."""
    new = copy.deepcopy(config)
    per_group = keep.heads[0].shape[1] if keep.heads else group_size(config)
    new.head_dim = head_dim(config)
    keep_layers(new, keep.layers)
    new.intermediate_size = len(keep.ffn[0])
    new.num_key_value_heads = len(keep.groups[0])
    new.num_attention_heads = len(keep.groups[0]) * per_group
    new.hidden_size = len(keep.hidden)
    new.rms_norm_eps = config.rms_norm_eps * config.hidden_size / new.hidden_size
    return new


def _rows(heads: torch.Tensor, dim: int) -> torch.Tensor:
    """Weight rows of the given head indices when each head spans ``dim`` rows."""
    return (heads.reshape(-1)[:, None] * dim + torch.arange(dim)).reshape(-1)


def query_heads(groups: torch.Tensor, per_group: int, in_group: torch.Tensor | None) -> torch.Tensor:
    """Absolute query-head indices kept: ``in_group`` [kept groups, q] positions, or all of each group."""
    if in_group is None:
        in_group = torch.arange(per_group).expand(len(groups), per_group)
    return (groups[:, None] * per_group + in_group).reshape(-1)


def _view(param: torch.Tensor, rows: slice | None) -> torch.Tensor:
    return param if rows is None else param[rows]


def _norm(weight: torch.Tensor, scale: float, offset: float) -> torch.Tensor:
    """RMSNorm weight whose effective gain (offset + w) is multiplied by ``scale``."""
    return (weight + offset) * scale - offset if scale != 1.0 else weight


def _copy_layer(family, src, dst, config, new_config, index: dict[str, torch.Tensor | None], scales) -> None:
    """Copy every logical tensor of one layer, indexing each axis by the kept indices of its kind."""
    source, target = family.logical_tensors(src, config), family.logical_tensors(dst, new_config)
    if source.keys() != target.keys():
        raise UnsupportedModelError(
            f"{config.model_type}: pruned layer has tensors {sorted(target)}, not {sorted(source)}"
        )
    for name, (param, rows, axes) in source.items():
        data = _view(param, rows)
        for dim, kind in enumerate(axes):
            if index[kind] is not None:
                data = data.index_select(dim, index[kind])
        if len(axes) == 1 and name.endswith(("norm", "layernorm")):
            data = _norm(data, scales[axes[0]], family.norm_offset)
        dst_param, dst_rows, _ = target[name]
        _view(dst_param, dst_rows).copy_(data)


def _rescale_qk(family, layer, config, hidden_scale: float, scales) -> None:
    """Undo the eps change for q/k norms: HF has one ``rms_norm_eps``, scaled by d_old / d_new for the
    hidden-width norms, but q/k norms average over head_dim or the projection rows. RMSNorm ignores
    its input's scale except through eps, so q and k scaled by alpha see eps' / alpha^2: alpha^2 =
    (d_old / d_new) × (kept / old norm width) restores eps exactly (measured on OLMo 2: logits moved
    6e-3 by a width prune of zero channels without this, 2e-6 with it)."""
    for name, kind in (("q", Q), ("k", KV)):
        alpha = hidden_scale / (scales[kind] if family.qk_norm == "full" else 1.0)
        if alpha == 1.0:
            continue
        weight, rows, bias = family.projection(layer, name, config)
        _view(weight, rows).mul_(alpha)
        if bias is not None:
            _view(bias, rows).mul_(alpha)


def _assert_all_written(new) -> None:
    """Every parameter of the new model was filled with NaN first; any NaN left was never written."""
    missing = [name for name, p in new.named_parameters() if torch.isnan(p).any()]
    if missing:
        raise UnsupportedModelError(
            f"surgery left {len(missing)} parameter(s) unwritten ({', '.join(missing[:3])}): the family "
            "spec in edgekit/arch does not describe every tensor of this model"
        )


@torch.no_grad()
def apply_keep(model, keep: Keep):
    """The pruned model (float32, eval mode); ``model`` is left untouched.

    Refuses families outside the edgekit.arch registry, and checks that every parameter of the new
    model was written from the old one.
    """
    from transformers import AutoModelForCausalLM

    config = model.config
    family = family_of(config)
    check_keep(config, keep)
    new_config = pruned_config(config, keep)
    new = AutoModelForCausalLM.from_config(new_config, dtype=torch.float32)
    for p in new.parameters():
        p.fill_(float("nan"))
    h = keep.hidden
    hidden_scale = math.sqrt(config.hidden_size / len(h))  # see the module docstring
    # Inputs keep their scale: Gemma multiplies embeddings by sqrt(hidden), so the kept columns grow
    # by c = sqrt(h / h'). A tied lm_head shares that table and would grow by c too; the final norm's
    # gain takes c back (for Gemma it cancels the width correction: the gain stays 1 + w).
    c = family.embedding_scale(config) / family.embedding_scale(new_config)
    family.embed(new).weight.copy_(family.embed(model).weight[:, h] * c)
    final_gain = hidden_scale / c if config.tie_word_embeddings else hidden_scale
    if not config.tie_word_embeddings:
        family.lm_head(new).weight.copy_(family.lm_head(model).weight[:, h])
    family.final_norm(new).weight.copy_(_norm(family.final_norm(model).weight[h], final_gain, family.norm_offset))
    heads = keep.heads or [None] * len(keep.layers)
    old_layers, new_layers = family.layers(model), family.layers(new)
    hd = head_dim(config)
    for j, (i, ffn, groups, in_group) in enumerate(zip(keep.layers, keep.ffn, keep.groups, heads, strict=True)):
        q = _rows(query_heads(groups, group_size(config), in_group), hd)
        kv = _rows(groups, hd)
        index = {HIDDEN: h, Q: q, KV: kv, FFN: ffn, HEAD_DIM: None, VOCAB: None}
        scales = {
            HIDDEN: hidden_scale,
            Q: math.sqrt(q_rows(config) / len(q)),
            KV: math.sqrt(kv_rows(config) / len(kv)),
            HEAD_DIM: 1.0,
        }
        _copy_layer(family, old_layers[i], new_layers[j], config, new_config, index, scales)
        if family.qk_norm != "none":
            _rescale_qk(family, new_layers[j], new_config, hidden_scale, scales)
    _assert_all_written(new)
    new.generation_config = copy.deepcopy(model.generation_config)
    return new.eval()


def keep_everything(model) -> Keep:
    """The identity selection (a starting point for removing one kind of structure)."""
    c = model.config
    family_of(c)  # fail closed before reading shapes an unknown family may not have
    n = c.num_hidden_layers
    return Keep(
        layers=list(range(n)),
        ffn=[torch.arange(c.intermediate_size)] * n,
        groups=[torch.arange(c.num_key_value_heads)] * n,
        hidden=torch.arange(c.hidden_size),
    )
