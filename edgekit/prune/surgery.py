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

Memory: the new model is built in the source's dtype (bf16 stays bf16: 2 bytes/parameter, not a
second fp32 copy), without random initialisation, and filled tensor by tensor (one slice of one
tensor is the only temporary). The new model's parameters start on the meta device and get memory
one layer at a time, just before that layer is written (NaN-filled, which keeps the "every
parameter written" check); with ``release_source=True`` each source layer is freed once copied, so
the allocator reuses its memory and the peak stays near one model plus one layer. Without it,
peak = source + pruned model. Rescaled tensors (norms, Gemma's
embedding scale) are computed in fp32 and rounded once, so a bf16 source gives bitwise the fp32
path's result rounded to bf16.
"""

from __future__ import annotations

import contextlib
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
            data = _norm(data.float(), scales[axes[0]], family.norm_offset)  # fp32, rounded once by copy_
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
    missing = [name for name, p in new.named_parameters() if any(c.isnan().any() for c in p.split(4096))]
    if missing:
        raise UnsupportedModelError(
            f"surgery left {len(missing)} parameter(s) unwritten ({', '.join(missing[:3])}): the family "
            "spec in edgekit/arch does not describe every tensor of this model"
        )


@contextlib.contextmanager
def _parameters_on_meta():
    """Parameters registered inside the block live on the meta device (no memory); buffers stay real,
    so the rotary frequencies and scales a model computes from its config are what a normal build has."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _empty_model(config, dtype: torch.dtype):
    """A model of ``config`` in ``dtype`` whose parameters are on the meta device (see ``_materialize``)."""
    from transformers import AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers: initialise (slower, same result)
        no_init_weights = contextlib.nullcontext
    with no_init_weights(), _parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # skipped with the initialisation; an untied head would stay NaN (and be caught)
    return model


def _materialize(module: torch.nn.Module, made: dict[int, torch.nn.Parameter]) -> None:
    """Give ``module``'s meta parameters real NaN-filled memory, allocated now (so it can reuse what
    the source just freed). ``made`` maps a meta parameter to its real one, which keeps tied weights
    tied; NaN is what ``_assert_all_written`` looks for."""
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is None or not param.is_meta:
                continue
            if id(param) not in made:
                real = torch.full(param.shape, float("nan"), dtype=param.dtype)
                made[id(param)] = torch.nn.Parameter(real, requires_grad=param.requires_grad)
            sub._parameters[name] = made[id(param)]


@torch.no_grad()
def apply_keep(model, keep: Keep, *, dtype: torch.dtype | None = None, release_source: bool = False):
    """The pruned model (eval mode) in ``dtype`` (default: ``model``'s own); ``model`` is left untouched.

    ``dtype=torch.float32`` for a model that will be trained (students, recovery).
    ``release_source``: free ``model``'s tensors once copied, for callers that no longer need it
    (it is unusable afterwards). Refuses families outside the edgekit.arch
    registry, and checks that every parameter of the new model was written from the old one.
    """
    config = model.config
    family = family_of(config)
    check_keep(config, keep)
    new_config = pruned_config(config, keep)
    new = _empty_model(new_config, dtype or family.embed(model).weight.dtype)
    made: dict[int, torch.nn.Parameter] = {}  # meta parameter -> its real, NaN-filled memory
    h = keep.hidden
    hidden_scale = math.sqrt(config.hidden_size / len(h))  # see the module docstring
    heads = keep.heads or [None] * len(keep.layers)
    old_layers, new_layers = family.layers(model), family.layers(new)
    release = _releaser(release_source)
    for i in set(range(len(old_layers))) - set(keep.layers):
        release(old_layers[i])
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
        _materialize(new_layers[j], made)
        _copy_layer(family, old_layers[i], new_layers[j], config, new_config, index, scales)
        if family.qk_norm != "none":
            _rescale_qk(family, new_layers[j], new_config, hidden_scale, scales)
        release(old_layers[i])
    _materialize(new, made)  # everything outside the layers
    _copy_ends(family, model, new, config, new_config, h, hidden_scale)
    release(model)
    _assert_all_written(new)
    new.generation_config = copy.deepcopy(model.generation_config)
    return new.eval()


def _releaser(enabled: bool):
    """``edgekit.lowmem.release`` when the source may be freed as it is copied, else a no-op."""
    if not enabled:
        return lambda module: None
    from edgekit.lowmem import release

    return release


def _copy_ends(family, model, new, config, new_config, h: torch.Tensor, hidden_scale: float) -> None:
    """Embeddings, LM head and final norm: kept hidden columns, rescaled in fp32 where a scale applies.

    Inputs keep their scale: Gemma multiplies embeddings by sqrt(hidden), so the kept columns grow by
    c = sqrt(h / h'). A tied LM head shares that table and would grow by c too; the final norm's gain
    takes c back (for Gemma it cancels the width correction: the gain stays 1 + w).
    """
    weight = family.embed(model).weight
    embed = weight if len(h) == weight.shape[1] else weight.index_select(1, h)  # no copy when width is kept
    c = family.embedding_scale(config) / family.embedding_scale(new_config)
    if c != 1.0:
        embed = embed.float() * c
    if not config.tie_word_embeddings:
        head = family.lm_head(model).weight
        family.lm_head(new).weight.copy_(head if len(h) == head.shape[1] else head.index_select(1, h))
    family.embed(new).weight.copy_(embed)
    del embed, weight
    final_gain = hidden_scale / c if config.tie_word_embeddings else hidden_scale
    norm = family.final_norm(model).weight[h].float()
    family.final_norm(new).weight.copy_(_norm(norm, final_gain, family.norm_offset))


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
