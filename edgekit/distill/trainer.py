"""The distillation loop: AdamW, warmup + cosine, accumulation, clipping, checkpoints, monitor.

CUDA runs use bf16 autocast; CPU runs are fp32. The data order is a pure function of (seed, step),
so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.distill.checkpoint import load_checkpoint, save_checkpoint
from edgekit.distill.losses import combined, topk_kl
from edgekit.distill.monitor import evaluate, model_logits


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 200
    batch_size: int = 8
    seq_len: int = 256  # informational: rows are already packed to this length
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_accum: int = 1
    clip_norm: float = 1.0
    temperature: float = 2.0
    alpha: float = 0.5  # weight of hard-label CE; 1.0 = no teacher signal
    divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    eval_every: int = 0  # steps between held-out evaluations (0: only at the end)
    checkpoint_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class DistillResult:
    student: Any
    history: list[dict] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, config: DistillConfig) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    warmup = min(config.warmup_steps, max(1, config.steps // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def batch_rows(step: int, micro: int, n_rows: int, config: DistillConfig) -> torch.Tensor:
    """Row indices of a micro-batch: epochs are seeded permutations, so this depends only on the step."""
    per_step = config.batch_size * config.grad_accum
    first = (step * config.grad_accum + micro) * config.batch_size
    epoch, offset = divmod(first, n_rows)
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
    idx = order[offset : offset + config.batch_size]
    if len(idx) < config.batch_size and per_step <= n_rows:  # wrap into the next epoch
        nxt = torch.randperm(n_rows, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch + 1))
        idx = torch.cat([idx, nxt[: config.batch_size - len(idx)]])
    return idx


def distill(
    teacher,
    student,
    train_ids: torch.Tensor,
    config: DistillConfig,
    *,
    heldout_ids=None,
    workdir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    topk_cache=None,
) -> DistillResult:
    """Train ``student`` towards ``teacher`` (or a top-K cache) on rows ``train_ids`` [n, seq]."""
    device = _device(config.device)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    start, history = 0, []
    if workdir is not None and resume:
        restored = load_checkpoint(Path(workdir), student, opt)
        if restored is not None:
            start, history = restored
    teacher_heldout = model_logits(teacher, heldout_ids) if teacher is not None and heldout_ids is not None else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    with _progress(progress, config.steps, start) as bar:
        for step in range(start, config.steps):
            started = time.perf_counter()
            loss_value = _step(step, teacher, student, train_ids, opt, config, device, autocast, topk_cache)
            entry = {
                "step": step + 1,
                "loss": loss_value,
                "lr": lr_at(step, config),
                "tokens_per_s": config.batch_size
                * config.grad_accum
                * train_ids.shape[1]
                / (time.perf_counter() - started),
            }
            if heldout_ids is not None and config.eval_every and (step + 1) % config.eval_every == 0:
                entry.update(evaluate(teacher_heldout, student, heldout_ids))
                student.train()
            history.append(entry)
            bar(step + 1, entry)
            if workdir is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
                save_checkpoint(Path(workdir), step + 1, student, opt, history)
                _log(Path(workdir), entry)
    student.eval()
    final = evaluate(teacher_heldout, student, heldout_ids) if heldout_ids is not None else {}
    return DistillResult(student.cpu(), history, final)


def _step(step, teacher, student, train_ids, opt, config, device, autocast, topk_cache) -> float:
    for group in opt.param_groups:
        group["lr"] = lr_at(step, config)
    total = 0.0
    for micro in range(config.grad_accum):
        idx = batch_rows(step, micro, len(train_ids), config)
        rows = train_ids[idx].to(device)
        labels = torch.cat([rows[:, 1:], torch.full_like(rows[:, :1], -100)], dim=1).reshape(-1)
        with autocast:
            s_logits = student(input_ids=rows).logits.reshape(labels.numel(), -1)
            if topk_cache is not None:
                lp, ids = topk_cache.rows(idx)
                loss = config.alpha * torch.nn.functional.cross_entropy(s_logits.float(), labels, ignore_index=-100)
                loss = loss + (1 - config.alpha) * topk_kl(
                    s_logits,
                    lp.reshape(labels.numel(), -1).to(device),
                    ids.reshape(labels.numel(), -1).to(device),
                    labels,
                )
            else:
                t_logits = None
                if teacher is not None and config.alpha < 1:
                    with torch.no_grad():
                        t_logits = teacher(input_ids=rows).logits.reshape(labels.numel(), -1)
                loss = combined(s_logits, t_logits, labels, config.temperature, config.alpha, config.divergence)
        (loss / config.grad_accum).backward()
        total += loss.item() / config.grad_accum
    torch.nn.utils.clip_grad_norm_(student.parameters(), config.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


def _log(workdir: Path, entry: dict) -> None:
    with open(workdir / "monitor.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _progress:
    """A rich progress bar showing loss and tokens/s (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total, start

    def __enter__(self):
        if not self.enabled:
            return lambda step, entry: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("distill"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True
        )
        self.bar.start()
        task = self.bar.add_task("distill", total=self.total, completed=self.start, info="")
        return lambda step, e: self.bar.update(
            task, completed=step, info=f"loss {e['loss']:.3f}  {e['tokens_per_s']:.0f} tok/s"
        )

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
