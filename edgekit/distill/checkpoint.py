"""Trainer checkpoints without pickle: weights, optimizer and RNG tensors in safetensors, scalars in JSON.

Tied weights (embeddings shared with the output layer) are stored once and re-tied on load.

Restoring them exactly (same float bits) is what lets an interrupted run end with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgekit.distill.checkpoint_check import check_checkpoint
from edgekit.fileio import atomic_path, write_json_atomic

LATEST = "latest"


def save_checkpoint(folder: Path, step: int, model, optimizer, history: list[dict]) -> None:
    """Write ``folder/latest`` atomically: model.safetensors, optimizer.safetensors, state.json."""
    with atomic_path(folder / LATEST) as tmp:
        tmp.mkdir()
        weights, tied = split_tied(model.state_dict())
        save_file(weights, tmp / "model.safetensors")
        tensors, scalars = {}, {}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    tensors[f"{i}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars[f"{i}.{key}"] = value
        save_file(tensors or {"_empty": torch.zeros(1)}, tmp / "optimizer.safetensors")
        save_file(_rng_state(), tmp / "rng.safetensors")
        state = {"step": step, "scalars": scalars, "history": history, "tied": tied}
        write_json_atomic(tmp / "state.json", state)


def load_checkpoint(folder: Path, model, optimizer) -> tuple[int, list[dict]] | None:
    """Restore model and optimizer from ``folder/latest``; returns (step, history) or None if absent."""
    ckpt = folder / LATEST
    if not (ckpt / "state.json").is_file():
        return None
    state = check_checkpoint(ckpt, model, optimizer)  # truncated, edited or foreign: one line, not a traceback
    device = next(model.parameters()).device
    weights = {k: v.to(device) for k, v in load_file(ckpt / "model.safetensors").items()}
    weights.update({alias: weights[owner] for alias, owner in state.get("tied", {}).items()})
    model.load_state_dict(weights)
    if state.get("tied") and hasattr(model, "tie_weights"):
        model.tie_weights()  # the stored tensor is one; keep the parameters one as well
    tensors = load_file(ckpt / "optimizer.safetensors")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        entry = {
            k.split(".", 1)[1]: v.to(device) if k.split(".", 1)[1] != "step" else v
            for k, v in tensors.items()
            if k.split(".", 1)[0] == str(i)
        }
        entry.update({k.split(".", 1)[1]: v for k, v in state["scalars"].items() if k.split(".", 1)[0] == str(i)})
        if entry:
            optimizer.state[p] = entry
    if (ckpt / "rng.safetensors").is_file():
        _set_rng_state(load_file(ckpt / "rng.safetensors"))
    return int(state["step"]), list(state["history"])


def split_tied(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors to store, {alias: stored name}): tensors sharing memory (tied embeddings) are stored
    once, because safetensors refuses shared tensors, and the alias is restored on load."""
    weights: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    owners: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in owners:
            tied[name] = owners[key]
            continue
        owners[key] = name
        weights[name] = tensor.detach().contiguous().cpu()
    return weights, tied


def _rng_state() -> dict[str, torch.Tensor]:
    """Global torch RNG states (CPU and every CUDA device): dropout draws from them."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[f"cuda.{i}"] for i in range(len(state) - 1) if f"cuda.{i}" in state]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
