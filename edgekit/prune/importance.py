"""How much each structure matters: FFN channels, KV groups (heads), hidden dims, whole layers.

Criteria:
* activation (Minitron): mean |activation| flowing through the structure on calibration text;
* magnitude: L2 norm of the weights that belong to the structure (no data needed);
* taylor: |w · ∂L/∂w| summed over the structure's weights (first-order estimate of the loss change);
* block influence (ShortGPT): 1 − cos(layer input, layer output); small means the layer barely acts;
* loo: leave-one-layer-out perplexity change on calibration text (the direct, slower layer measure).

Every score is "higher = keep". Shapes: ffn [layers, intermediate], groups [layers, kv_heads],
heads [layers, heads], hidden [hidden], layers [layers]. Criteria "block" and "loo" name how layers
are scored; widths are then scored by activation.

Precision and memory: ``score`` takes the model in its checkpoint precision (bf16 stays bf16) and
computes in float32 one unit at a time (``edgekit.lowmem.fp32_compute``), so the scores equal the
fp32 model's while the peak is the resident model + its largest unit in fp32 + one batch's
activations. Activation scoring runs the decoder without the LM head (no [batch, seq, vocab]
logits). Taylor needs gradients, which ``fp32_compute`` cannot give: it upcasts the whole model
to float32 for the pass (``lowmem.fp32_everywhere``; weights + gradients: 8 bytes/parameter) and
puts the original tensors back afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edgekit.arch import family_of, head_dim


@dataclass
class Scores:
    ffn: torch.Tensor  # [layers, intermediate]
    groups: torch.Tensor  # [layers, kv_heads]
    hidden: torch.Tensor  # [hidden]
    layers: torch.Tensor  # [layers] block influence (or perplexity increase for loo)
    heads: torch.Tensor | None = None  # [layers, heads] per query head


def _dims(model) -> tuple[int, int, int]:
    c = model.config
    return c.num_attention_heads, c.num_key_value_heads, head_dim(c)


def _weight(model, layer, name: str, grad: bool = False) -> torch.Tensor:
    """A logical projection's weight (or its gradient), fused projections seen as row slices."""
    param, rows, _ = family_of(model.config).projection(layer, name, model.config)
    t = param.grad if grad else param
    return (t if rows is None else t[rows]).float()  # norms of bf16 weights, accumulated and kept in fp32


def _group_scores(per_head: torch.Tensor, heads: int, kv: int) -> torch.Tensor:
    """Sum per-query-head scores [layers, heads] into KV groups [layers, kv]."""
    return per_head.reshape(per_head.shape[0], kv, heads // kv).sum(-1)


@torch.no_grad()
def activation_scores(model, calibration: torch.Tensor, batch: int = 4) -> Scores:
    """Minitron-style activation importance from forward hooks on calibration rows [n, seq]."""
    heads, kv, hd = _dims(model)
    family = family_of(model.config)
    layers = family.layers(model)
    n = len(layers)
    ffn = torch.zeros(n, model.config.intermediate_size)
    head = torch.zeros(n, heads)
    hidden = torch.zeros(model.config.hidden_size)
    influence = torch.zeros(n)
    hooks = []
    for i, layer in enumerate(layers):

        def ffn_hook(mod, args, i=i):
            ffn[i] += args[0].abs().reshape(-1, args[0].shape[-1]).mean(0).float().cpu()

        def head_hook(mod, args, i=i):
            x = args[0].reshape(-1, heads, hd)
            head[i] += x.norm(dim=-1).mean(0).float().cpu()

        def hidden_hook(mod, args, out):
            hidden.add_(out.abs().reshape(-1, out.shape[-1]).mean(0).float().cpu())

        def hidden_pre_hook(mod, args, kwargs):  # families without an input norm: the residual stream
            x = args[0] if args else kwargs["hidden_states"]
            hidden.add_(x.abs().reshape(-1, x.shape[-1]).mean(0).float().cpu())

        def layer_hook(mod, args, kwargs, out, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), dim=-1)
            influence[i] += (1 - cos).mean().float().cpu()

        hooks += [
            layer.mlp.down_proj.register_forward_pre_hook(ffn_hook),
            layer.self_attn.o_proj.register_forward_pre_hook(head_hook),
            getattr(layer, family.hidden_probe).register_forward_hook(hidden_hook)
            if family.hidden_probe
            else layer.register_forward_pre_hook(hidden_pre_hook, with_kwargs=True),
            layer.register_forward_hook(layer_hook, with_kwargs=True),
        ]
    decoder = model.get_decoder()  # hidden states only: the LM head's logits are never needed here
    try:
        for start in range(0, len(calibration), batch):
            decoder(input_ids=calibration[start : start + batch])
    finally:
        for h in hooks:
            h.remove()
    return Scores(ffn, _group_scores(head, heads, kv), hidden, influence, head)


@torch.no_grad()
def magnitude_scores(model, calibration: torch.Tensor | None = None) -> Scores:
    """Weight-norm importance; layer scores still come from block influence when data is given."""
    heads, kv, hd = _dims(model)
    ffn, head = [], []
    family = family_of(model.config)
    for layer in family.layers(model):
        w = {name: _weight(model, layer, name) for name in ("gate", "up", "down", "o")}
        ffn.append(w["gate"].norm(dim=1) + w["up"].norm(dim=1) + w["down"].norm(dim=0))
        head.append(w["o"].reshape(-1, heads, hd).norm(dim=(0, 2)))
    hidden = family.embed(model).weight.float().norm(dim=0)
    if calibration is not None:
        layers = activation_scores(model, calibration).layers
    else:  # without data: how strongly each layer writes into the residual stream
        layers = torch.stack([_writes(layer) for layer in family.layers(model)])
    head = torch.stack(head)
    return Scores(torch.stack(ffn), _group_scores(head, heads, kv), hidden, layers, head)


def _writes(layer) -> torch.Tensor:
    return layer.self_attn.o_proj.weight.float().norm() + layer.mlp.down_proj.weight.float().norm()


def taylor_scores(model, calibration: torch.Tensor, batch: int = 4) -> Scores:
    """First-order Taylor importance: |w · ∂L/∂w| summed per structure, L the LM loss on calibration.

    A low-precision model is upcast to float32 for the pass and restored afterwards (exactly).
    """
    from edgekit.lowmem import fp32_everywhere

    with fp32_everywhere(model):
        return _taylor(model, calibration, batch)


def _taylor(model, calibration: torch.Tensor, batch: int) -> Scores:
    heads, kv, hd = _dims(model)
    model.zero_grad(set_to_none=True)
    for start in range(0, len(calibration), batch):
        rows = calibration[start : start + batch]
        model(input_ids=rows, labels=rows).loss.backward()

    family = family_of(model.config)

    def saliency(layer, name: str) -> torch.Tensor:
        return (_weight(model, layer, name).detach() * _weight(model, layer, name, grad=True)).abs()

    ffn, head, kv_own = [], [], []
    with torch.no_grad():
        for layer in family.layers(model):
            # a KV group also owns its k/v rows, which its query heads' scores do not count
            kv_own.append(sum(saliency(layer, name).reshape(kv, -1).sum(1) for name in ("k", "v")))
            ffn.append(saliency(layer, "gate").sum(1) + saliency(layer, "up").sum(1) + saliency(layer, "down").sum(0))
            head.append(
                saliency(layer, "o").reshape(-1, heads, hd).sum(dim=(0, 2))
                + saliency(layer, "q").reshape(heads, hd, -1).sum(dim=(1, 2))
            )
        embed = family.embed(model).weight
        hidden = (embed.detach() * embed.grad).abs().sum(0)
    model.zero_grad(set_to_none=True)
    layers = activation_scores(model, calibration).layers
    head = torch.stack(head)
    groups = _group_scores(head, heads, kv) + torch.stack(kv_own)
    return Scores(torch.stack(ffn), groups, hidden, layers, head)


@torch.no_grad()
def calibration_loss(model, calibration: torch.Tensor, batch: int = 4) -> float:
    """Mean next-token cross-entropy (nats/token) over calibration rows [n, seq]."""
    total, count = 0.0, 0
    for start in range(0, len(calibration), batch):
        rows = calibration[start : start + batch]
        total += float(model(input_ids=rows, labels=rows).loss) * len(rows)
        count += len(rows)
    return total / count


def _skip(module, args, kwargs, out):
    """Forward hook that makes a decoder layer the identity (its input passes through)."""
    x = args[0] if args else kwargs["hidden_states"]
    return (x, *out[1:]) if isinstance(out, tuple) else x


@torch.no_grad()
def loo_scores(model, calibration: torch.Tensor) -> Scores:
    """Layers by perplexity increase when each is skipped alone; widths by activation.

    Costs one calibration pass per layer. ``layers[i]`` = ppl(without layer i) − ppl(full model).
    """
    base = activation_scores(model, calibration)
    full = math.exp(calibration_loss(model, calibration))
    increase = []
    for layer in family_of(model.config).layers(model):
        hook = layer.register_forward_hook(_skip, with_kwargs=True)
        try:
            increase.append(math.exp(calibration_loss(model, calibration)) - full)
        finally:
            hook.remove()
    return Scores(base.ffn, base.groups, base.hidden, torch.tensor(increase), base.heads)


CRITERIA = {
    "activation": activation_scores,
    "magnitude": magnitude_scores,
    "taylor": taylor_scores,
    "block": activation_scores,  # block influence for layers, activation for widths
    "loo": loo_scores,
}


def score(model, calibration: torch.Tensor | None, criterion: str = "activation") -> Scores:
    """Importance scores by the named criterion (activation | magnitude | taylor | block | loo)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if calibration is None and criterion != "magnitude":
        raise ValueError(f"criterion {criterion!r} needs calibration data")
    if criterion == "taylor":
        return taylor_scores(model, calibration)
    from edgekit.lowmem import fp32_compute

    with torch.no_grad(), fp32_compute(model):
        return CRITERIA[criterion](model, calibration)
