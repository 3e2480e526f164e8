"""Importance matrix for llama.cpp's quantizer, computed in PyTorch.

For every matrix multiplication y = x·Wᵀ, llama.cpp's imatrix is the mean over calibration tokens of
x² for each input column (it accumulates Σx² and the number of tokens, then divides). Quantization
then spends precision on the columns whose inputs are large, which is where rounding errors cost
the most output error. Entries are keyed by the GGUF name of the weight the product reads: with
tied embeddings the output product reads ``token_embd.weight``, so that is its entry's name (as in
llama.cpp's own imatrix tool), and the embedding matrix is quantized with it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from edgekit.arch import family_of
from edgekit.export.gguf import gguf_name


class _HeadReached(Exception):
    """Raised by the output head's pre-hook once its input is recorded: nothing after it is needed."""


def _stop(module, args) -> None:
    raise _HeadReached


@torch.no_grad()
def compute_imatrix(model, calibration: torch.Tensor, batch: int = 4) -> tuple[dict[str, np.ndarray], int]:
    """({GGUF tensor name: mean x² per input column [in_features]}, tokens seen) over rows [n, seq].

    A model resident in bf16/fp16 (``edgekit.lowmem.load_resident``) computes in fp32 one unit at
    a time, so the activations, and the matrix, are the fp32 model's. The forward pass stops once
    the output head's input is recorded: the logits ([batch, seq, vocab], 0.5 GB for four rows of
    a 128k vocabulary) and the head's fp32 copy are never made.
    """
    from edgekit.lowmem import fp32_compute

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    family = family_of(model.config)
    tied = getattr(model.config, "tie_word_embeddings", False)
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if (
            module_name == family.lm_head_path and tied and not family.gguf_needs_output
        ):  # the output product reads the embeddings
            name = "token_embd.weight"
        else:
            name = gguf_name(f"{module_name}.weight", family, model.config.num_hidden_layers)

        def hook(mod, args, name=name):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        hooks.append(module.register_forward_pre_hook(hook))
    hooks.append(family.lm_head(model).register_forward_pre_hook(_stop))  # after the head's own hook
    try:
        with fp32_compute(model):
            for start in range(0, len(calibration), batch):
                with contextlib.suppress(_HeadReached):
                    model(input_ids=calibration[start : start + batch])
    finally:
        for h in hooks:
            h.remove()
    tokens = int(calibration.numel())
    return {name: (sums[name] / counts[name]).cpu().numpy().astype(np.float32) for name in sums}, tokens


def save_imatrix_file(path, values: dict[str, np.ndarray], info: dict) -> None:
    """Store an imatrix as safetensors (values) with its provenance in the metadata, atomically."""
    import json

    from safetensors.numpy import save_file

    from edgekit.fileio import atomic_path

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in values.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
        tmp.chmod(0o644)  # readable like the GGUF files beside it


def load_imatrix_file(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read an imatrix: ours (``.safetensors``, see ``save_imatrix_file``) or llama-imatrix's GGUF.

    llama.cpp's GGUF imatrix stores, per weight, ``<name>.in_sum2`` (Σx² per column) and
    ``<name>.counts`` (tokens seen); the quantizer's input is their ratio, as computed here.
    """
    from pathlib import Path

    from edgekit.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "imatrix file not found")
    try:
        values, info = _read_gguf_imatrix(path) if path.suffix == ".gguf" else _read_safetensors_imatrix(path)
    except Exception as exc:
        raise InputError(path, f"not an imatrix file edgekit can read ({exc})") from None
    if not values:
        raise InputError(path, "the imatrix file holds no entries")
    return values, {**info, "file": path.name}


def _read_safetensors_imatrix(path) -> tuple[dict[str, np.ndarray], dict]:
    import json

    from safetensors import safe_open

    with safe_open(str(path), "np") as fh:
        values = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        info = json.loads((fh.metadata() or {}).get("info", "{}"))
    return values, info


def _read_gguf_imatrix(path) -> tuple[dict[str, np.ndarray], dict]:
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    values = {}
    for name, sums in tensors.items():
        if name.endswith(".in_sum2"):
            weight = name.removesuffix(".in_sum2")
            counts = tensors[f"{weight}.counts"].reshape(-1)
            rows = sums.reshape(len(counts), -1)
            values[weight] = np.where(counts[:, None] > 0, rows / np.maximum(counts, 1)[:, None], 1.0).reshape(-1)
    field = reader.fields.get("imatrix.chunk_count")
    chunks = int(field.parts[field.data[0]][0]) if field else 0
    return values, {"dataset": "llama-imatrix file", "chunks": chunks}
