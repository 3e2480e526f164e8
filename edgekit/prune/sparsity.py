"""Unstructured and 2:4 semi-structured sparsity: zeros inside the matrices, shapes unchanged.

Be clear about what this buys. The model keeps its dense shapes, so the safetensors, GGUF and ONNX
files have the same size and run at the same speed on dense kernels (llama.cpp, ONNX Runtime CPU,
PyTorch dense matmul): a zero costs as much as any other weight. What it buys is *storage*: files
full of zeros compress well (zstd / zip for download or over-the-air updates), and 2:4 patterns are
what NVIDIA's sparse tensor cores (Ampere and later, ``torch.sparse.to_sparse_semi_structured``)
can accelerate. Only decoder projections are sparsified; embeddings, lm_head and norms stay dense.
"""

from __future__ import annotations

import torch

PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")  # logical names (edgekit.arch)


def _projections(model):
    """Every decoder projection weight; fused ones (Phi-3's qkv_proj, gate_up_proj) as row-slice views,
    so each logical matrix is sparsified on its own and none is skipped."""
    from edgekit.arch import family_of

    family = family_of(model.config)
    for layer in family.layers(model):
        for name in PROJECTIONS:
            param, rows, _ = family.projection(layer, name, model.config)
            yield param.data if rows is None else param.data[rows]


@torch.no_grad()
def magnitude_sparsify(model, sparsity: float) -> float:
    """Zero the ``sparsity`` fraction of smallest-|w| weights in every projection's rows, in place.

    Per output row (not per matrix), so no row is emptied. Returns the achieved fraction of zeros.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    for weight in _projections(model):
        k = int(weight.shape[1] * sparsity)
        if k:
            drop = weight.abs().topk(k, dim=1, largest=False).indices
            weight.scatter_(1, drop, 0.0)
    return projection_sparsity(model)


@torch.no_grad()
def semi_structured_2_4(model) -> float:
    """Keep the 2 largest-|w| of every 4 consecutive input weights in each projection, in place."""
    for weight in _projections(model):
        if weight.shape[1] % 4:
            raise ValueError(f"2:4 sparsity needs input widths divisible by 4, got {tuple(weight.shape)}")
        blocks = weight.view(weight.shape[0], -1, 4)
        drop = blocks.abs().topk(2, dim=-1, largest=False).indices
        blocks.scatter_(-1, drop, 0.0)
    return projection_sparsity(model)


def is_2_4(weight: torch.Tensor) -> bool:
    """True when at most 2 of every 4 consecutive input weights are non-zero."""
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def projection_sparsity(model) -> float:
    """Fraction of zeros over all decoder projection weights."""
    zeros = total = 0
    for weight in _projections(model):
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total
