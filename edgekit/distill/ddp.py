"""Data parallelism for the trainer: torchrun / accelerate launch set WORLD_SIZE, RANK, MASTER_ADDR.

Each rank takes every world-th row of the global micro-batch, so the union of ranks sees exactly the
rows a single process would, and gradients are averaged with one all-reduce per step. Every rank
holds the same weights after each step, so only rank 0 writes checkpoints and logs. Gloo on CPU,
NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: str = "cpu"  # where collectives run: NCCL only reduces CUDA tensors

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global micro-batch of row indices."""
        return idx[self.rank :: self.size]


def local_device(device: torch.device) -> torch.device:
    """This rank's device: under a multi-process launch each CUDA rank takes GPU ``LOCAL_RANK``.

    Without it every rank would land on cuda:0, which NCCL refuses (and would not fit anyway).
    """
    if device.type != "cuda" or device.index is not None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> World:
    """Join the process group when launched with WORLD_SIZE > 1 (idempotent); else a 1-process world.

    ``device`` is the one :func:`local_device` chose for this rank.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=str(device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), str(device))


def average_gradients(params, world: World) -> None:
    """All-reduce and average ``.grad`` of ``params`` across ranks (one flat buffer, one call)."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_scalar(value: float, world: World) -> float:
    """Mean of a Python float over ranks (for the logged loss)."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
