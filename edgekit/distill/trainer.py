"""The distillation loop: AdamW, warmup + cosine, accumulation, clipping, checkpoints, monitor.

CUDA runs use bf16 autocast; CPU runs are fp32. The data order is a pure function of (seed, step),
so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.distill import ddp
from edgekit.distill.align import HiddenAligner
from edgekit.distill.cache import rows_digest
from edgekit.distill.checkpoint import LATEST, load_checkpoint, save_checkpoint
from edgekit.distill.checkpoint_check import check_resume_step
from edgekit.distill.losses import DIVERGENCES, next_token_labels
from edgekit.distill.monitor import evaluate, model_logits
from edgekit.distill.multi import TeacherCaches, TeacherEnsemble
from edgekit.distill.objective import Batch, batch_loss
from edgekit.distill.onpolicy import on_policy_batch, uses_student_samples
from edgekit.errors import ConfigError, InputError, Problem
from edgekit.fileio import write_text_atomic


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 200
    batch_size: int = 8  # global rows per micro-batch (split across DDP ranks)
    seq_len: int = 256  # informational: rows are already packed to this length
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_accum: int = 1
    clip_norm: float = 1.0
    temperature: float = 2.0
    alpha: float = 0.5  # weight of hard-label CE; 1.0 = no teacher signal
    divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    beta: float = 0.5  # JSD mixture weight (divergence="jsd")
    fused: bool = False  # KD loss from hidden states + lm_head, chunked: full logits never exist (not with align)
    chunk: int = 1024  # tokens per chunk of the fused loss
    cache_tail: str = "bucket"  # bucket | uniform: how a top-K cache's tail mass is compared (see topk_kl)
    align: str = "none"  # none | mse | cosine: hidden-state alignment of mapped layers
    align_weight: float = 1.0
    align_attention: float = 0.0  # weight of attention-map transfer (head-averaged KL; switches to eager attention)
    on_policy: float = 0.0  # λ: fraction of steps trained on the student's own samples (GKD)
    on_policy_prompt: int = 0  # tokens of each row kept as the prompt when sampling (0: half the row)
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
    train_ids: torch.Tensor | None,
    config: DistillConfig,
    *,
    heldout_ids=None,
    workdir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    topk_cache=None,
    prompt_lengths: torch.Tensor | None = None,
    heldout_teacher_logits=None,
    reference_logits=None,
) -> DistillResult:
    """Train ``student`` towards ``teacher`` (or a top-K cache) on rows ``train_ids`` [n, seq].

    ``topk_cache`` (a :class:`~edgekit.distill.cache.TopKCache`) replaces the teacher; ``train_ids``
    may then be None (the cache holds its rows). ``prompt_lengths`` [n] masks each row's prompt out
    of the loss (sequence-level KD). ``heldout_teacher_logits`` ([rows*seq, vocab], from
    ``monitor.model_logits``) gives the monitor its teacher when training from a cache.
    ``reference_logits`` (same shape) adds ``kl_to_original``/``top1_to_original`` to every
    evaluation: the original teacher's, when this run's teacher is an intermediate student. A
    :class:`~edgekit.distill.multi.TeacherEnsemble` teacher is trained against at this run's
    temperature and monitored at T = 1. Under torchrun the global batch is split across ranks.
    """
    device = ddp.local_device(_device(config.device))
    world = ddp.setup(device)
    train_ids = _training_rows(train_ids, topk_cache)
    _check(config, world, teacher, topk_cache)
    if isinstance(teacher, TeacherEnsemble):
        monitor_teacher, teacher = teacher.at(1.0), teacher.at(config.temperature)
    else:
        monitor_teacher = teacher
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    if config.align_attention > 0 and teacher is not None:
        for model in (student, teacher):  # SDPA kernels do not return attention maps
            model.set_attn_implementation("eager")
    aligner = None
    if config.align != "none":
        aligner = HiddenAligner.for_models(student, teacher, config.align).to(device)
    trainable = torch.nn.ModuleDict({"student": student, "aligner": aligner}) if aligner is not None else student
    opt = torch.optim.AdamW(trainable.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    start, history = 0, []
    if workdir is not None and resume:
        restored = load_checkpoint(Path(workdir), trainable, opt)
        if restored is not None:
            start, history = restored
            check_resume_step(Path(workdir) / LATEST, start, config.steps)
    teacher_heldout = heldout_teacher_logits
    if teacher_heldout is None and teacher is not None and heldout_ids is not None:
        teacher_heldout = model_logits(monitor_teacher.to(device), heldout_ids)
    run = _Run(teacher, student, aligner, trainable, train_ids, prompt_lengths, topk_cache, opt, config, device, world)
    with _progress(progress and world.main, config.steps, start) as bar:
        for step in range(start, config.steps):
            started = time.perf_counter()
            entry = {"step": step + 1, "loss": _step(step, run), "lr": lr_at(step, config)}
            tokens = config.batch_size * config.grad_accum * train_ids.shape[1]
            entry["tokens_per_s"] = tokens / (time.perf_counter() - started)
            if device.type == "cuda":  # peak since the run began, MiB (the figure a GPU run is sized by)
                entry["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            if heldout_ids is not None and config.eval_every and (step + 1) % config.eval_every == 0:
                entry.update(evaluate(teacher_heldout, student, heldout_ids, reference_logits))
                student.train()
            history.append(entry)
            bar(step + 1, entry)
            if workdir is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
                if world.main:
                    save_checkpoint(Path(workdir), step + 1, trainable, opt, history)
                    write_text_atomic(Path(workdir) / "monitor.jsonl", "".join(json.dumps(e) + "\n" for e in history))
                ddp.barrier(world)
    student.eval()
    final = evaluate(teacher_heldout, student, heldout_ids, reference_logits) if heldout_ids is not None else {}
    return DistillResult(student.cpu(), history, final)


@dataclass
class _Run:
    """Everything one training step needs (kept together so _step stays a short function)."""

    teacher: Any
    student: Any
    aligner: Any
    trainable: Any
    train_ids: torch.Tensor
    prompt_lengths: torch.Tensor | None
    cache: Any
    opt: torch.optim.Optimizer
    config: DistillConfig
    device: torch.device
    world: ddp.World


def _training_rows(train_ids, topk_cache) -> torch.Tensor:
    """The rows to train on; with a cache they must be the rows it was built on (same sha256)."""
    if topk_cache is None:
        if train_ids is None:
            raise ValueError("train_ids is required without a top-K cache")
        return train_ids
    if train_ids is None:
        return topk_cache.all_input_ids()
    if rows_digest(train_ids) != topk_cache.index["rows_sha256"]:
        raise InputError(topk_cache.folder, "top-K cache was built on other token rows than the ones given")
    return train_ids


def _check(config: DistillConfig, world: ddp.World, teacher, cache) -> None:
    problems = []
    if config.batch_size % world.size:
        problems.append(f"batch_size {config.batch_size} is not divisible by the {world.size} DDP ranks")
    if (config.align != "none" or config.align_attention > 0) and teacher is None:
        problems.append("hidden-state/attention alignment needs the teacher (not only a top-K cache)")
    if config.on_policy > 0 and teacher is None:
        problems.append("on-policy KD needs the teacher to score student samples (a cache cannot)")
    if config.divergence not in DIVERGENCES:
        problems.append(f"divergence {config.divergence!r} is not one of {', '.join(DIVERGENCES)}")
    if cache is not None and config.divergence != "forward_kl":
        problems.append("a top-K cache supports forward KL only (the tail hides the student-side terms)")
    if isinstance(cache, TeacherCaches) and config.cache_tail != "bucket":
        problems.append("several teachers' top-K caches combine with the bucket tail only")
    if isinstance(teacher, TeacherEnsemble) and (config.fused or config.align != "none" or config.align_attention):
        problems.append("several teachers: the fused loss and alignment need one teacher's hidden states")
    if problems:
        raise ConfigError(Problem("distill", "", p) for p in problems)


def _micro_batch(step: int, micro: int, run: _Run) -> Batch:
    config = run.config
    idx = run.world.shard(batch_rows(step, micro, len(run.train_ids), config))
    rows = run.train_ids[idx].to(run.device)
    lengths = run.prompt_lengths[idx] if run.prompt_lengths is not None else None
    labels = next_token_labels(rows, prompt_lengths=lengths)
    if run.teacher is not None and uses_student_samples(step, config.on_policy, config.seed):
        prompt = config.on_policy_prompt or rows.shape[1] // 2
        seed = ((config.seed * 1_000_003 + step) * 97 + micro) * 131 + run.world.rank
        rows, labels = on_policy_batch(run.student, rows, prompt, seed)
        return Batch(rows, labels, idx, on_policy=True)
    return Batch(rows, labels, idx)


def _step(step: int, run: _Run) -> float:
    for group in run.opt.param_groups:
        group["lr"] = lr_at(step, run.config)
    autocast = autocast_for(run.device)
    total = 0.0
    for micro in range(run.config.grad_accum):
        batch = _micro_batch(step, micro, run)
        with autocast:
            loss = batch_loss(batch, run.student, run.teacher, run.aligner, run.cache, run.config)
        (loss / run.config.grad_accum).backward()
        total += loss.item() / run.config.grad_accum
    params = [p for p in run.trainable.parameters() if p.requires_grad]
    ddp.average_gradients(params, run.world)
    torch.nn.utils.clip_grad_norm_(params, run.config.clip_norm)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return ddp.average_scalar(total, run.world)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (weights and optimizer state stay fp32); nothing on CPU, where runs are fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def progress_text(entry: dict, heldout_kl: float | None) -> str:
    """The progress bar's line after a step: training loss, tokens/s and the latest held-out KL (nats/token)."""
    text = f"loss {entry['loss']:.3f}  {entry['tokens_per_s']:.0f} tok/s"
    return text if heldout_kl is None else f"{text}  held-out KL {heldout_kl:.3f}"


class _progress:
    """A rich progress bar showing loss, tokens/s and held-out KL (no-op when disabled)."""

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
        last: dict[str, float | None] = {"kl": None}

        def update(step: int, e: dict) -> None:
            if "kl" in e:  # held-out KL is only known on evaluation steps; keep showing the latest
                last["kl"] = e["kl"]
            self.bar.update(task, completed=step, info=progress_text(e, last["kl"]))

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
