"""Two-process DDP on CPU (gloo) follows the single-process loss curve for the same global batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

STEPS, GLOBAL_BATCH, SEQ = 4, 4, 16


def _setup():
    from edgekit.distill import DistillConfig, derive_student
    from edgekit.models import tiny_model

    torch.set_num_threads(1)
    teacher = tiny_model(vocab_size=512, num_layers=2, seed=0)
    rows = torch.randint(3, 512, (16, SEQ), generator=torch.Generator().manual_seed(3))
    config = DistillConfig(steps=STEPS, batch_size=GLOBAL_BATCH, lr=3e-3, warmup_steps=1, alpha=0.3, checkpoint_every=2)
    return teacher, derive_student(teacher, num_layers=1), rows, config


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    import edgekit.distill.trainer as trainer
    from edgekit.distill import distill

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    teacher, student, rows, config = _setup()
    seen, real = [], trainer.batch_loss

    def spy(batch, *args):
        seen.append(batch.idx.tolist())
        return real(batch, *args)

    trainer.batch_loss = spy
    result = distill(teacher, student, rows, config, workdir=Path(out) / "run", progress=False)
    Path(out, f"rows-{rank}.json").write_text(json.dumps(seen))
    Path(out, f"losses-{rank}.json").write_text(json.dumps([e["loss"] for e in result.history]))
    torch.save(result.student.state_dict(), Path(out, f"weights-{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_two_process_ddp_follows_single_process_loss_curve(tmp_path):
    from edgekit.distill import distill
    from edgekit.distill.trainer import batch_rows

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    before = torch.get_num_threads()
    try:
        teacher, student, rows, config = _setup()
        single = [e["loss"] for e in distill(teacher, student, rows, config, progress=False).history]
    finally:
        torch.set_num_threads(before)
    rank0 = json.loads((tmp_path / "losses-0.json").read_text())
    rank1 = json.loads((tmp_path / "losses-1.json").read_text())
    assert rank0 == rank1  # the logged loss is the all-reduced mean
    seen0 = json.loads((tmp_path / "rows-0.json").read_text())
    seen1 = json.loads((tmp_path / "rows-1.json").read_text())
    for step, (a, b) in enumerate(zip(seen0, seen1, strict=True)):  # each rank gets its half of the batch
        assert len(a) == len(b) == GLOBAL_BATCH // 2 and not set(a) & set(b)
        assert sorted(a + b) == sorted(batch_rows(step, 0, 16, config).tolist())
    assert rank0 == pytest.approx(single, rel=1e-4)
    w0, w1 = torch.load(tmp_path / "weights-0.pt"), torch.load(tmp_path / "weights-1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # ranks stay in lockstep
    assert (tmp_path / "run" / "latest" / "model.safetensors").is_file()  # written by rank 0


@pytest.mark.parametrize(
    ("env", "asked", "expected"),
    [
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda", "cuda:1"),  # each rank its own GPU
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cpu", "cpu"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:0", "cuda:0"),  # an explicit index is kept
        ({"WORLD_SIZE": "1"}, "cuda", "cuda"),
    ],
)
def test_local_device_gives_each_cuda_rank_its_local_gpu(monkeypatch, env, asked, expected):
    from edgekit.distill.ddp import local_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert local_device(torch.device(asked)) == torch.device(expected)
