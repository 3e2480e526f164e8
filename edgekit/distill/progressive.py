"""Progressive distillation: teacher → intermediate student(s) → final student, one stage at a time.

A large compression ratio in one jump leaves the student far from its teacher; going through
intermediate sizes (each stage's student becoming the next stage's teacher, as in "teacher
assistant" KD, Mirzadeh et al. 2020, and Minitron's prune-then-distill rounds) keeps every gap
small. Each stage's student is derived from the previous stage's model: every k-th layer kept
(``derive_student``) and, when the stage asks for a narrower FFN, the least important FFN
channels pruned by activation importance on the training rows (Minitron-style), then recovered
by distillation from the previous model.

Stage spelling (``--via``): comma-separated items ``L`` or ``LxF``: L the fraction of the
*original teacher's* layers the intermediate keeps, F the fraction of its FFN width kept (default
1). ``--via 0.5,0.25`` on a 16-layer teacher: 16 → 8 → 4 → final (``--student-layers``).

Output, under ``workdir``: ``stage-1/`` … ``stage-N/``, each with ``run/`` (checkpoints,
``monitor.jsonl``), ``model/`` (that stage's student, written once it finished) and
``stage.json`` (its shape and held-out metrics). A resumed run skips finished stages and resumes
the unfinished one from its checkpoint, so it ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.distill.student import derive_student
from edgekit.distill.trainer import DistillConfig, distill
from edgekit.errors import ConfigError, Problem
from edgekit.fileio import atomic_path, write_json_atomic

STAGE_INFO = "stage.json"


@dataclass(frozen=True)
class Stage:
    """One student size: decoder layers and the fraction of the FFN width kept (1.0: all)."""

    layers: int
    ffn_fraction: float = 1.0


@dataclass
class ProgressiveResult:
    student: Any
    stages: list[dict] = field(default_factory=list)  # per stage: shape, final metrics, history


def parse_via(text: str, flag: str = "--via") -> list[tuple[float, float]]:
    """``"0.5,0.25x0.75"`` -> [(0.5, 1.0), (0.25, 0.75)]: (layer fraction, FFN fraction) per stage."""
    items, problems = [], []
    for raw in (t.strip() for t in text.split(",")):
        parts = raw.lower().split("x")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or not all(0.0 < v <= 1.0 for v in values):
            problems.append(
                Problem(flag, "", f"{raw!r}: expected a layer fraction in (0, 1], optionally xFFN, e.g. 0.5x0.75")
            )
            continue
        items.append((values[0], values[1] if len(values) == 2 else 1.0))
    if problems:
        raise ConfigError(problems)
    return items


def plan_stages(teacher_layers: int, via: list[tuple[float, float]], final: Stage) -> list[Stage]:
    """The stages in order (intermediates, then ``final``); each strictly smaller than the one before.

    The final stage keeps the narrowest intermediate's FFN width unless it asks for a narrower one.
    """
    if via:
        final = Stage(final.layers, min(final.ffn_fraction, min(ffn for _, ffn in via)))
    stages = [Stage(max(1, round(teacher_layers * f)), ffn) for f, ffn in via] + [final]
    problems = []
    previous = Stage(teacher_layers, 1.0)
    for s in stages:
        if s.layers > previous.layers or s.ffn_fraction > previous.ffn_fraction or s == previous:
            problems.append(
                Problem("--via", "", f"stage {s.layers} layers x{s.ffn_fraction:g} FFN is not smaller than the one "
                        f"before ({previous.layers} layers x{previous.ffn_fraction:g}); list sizes from large to small")
            )  # fmt: skip
        previous = s
    if problems:
        raise ConfigError(problems)
    return stages


def stage_student(
    previous, stage: Stage, previous_ffn_fraction: float, calibration: torch.Tensor, seed: int, init: str = "teacher"
):
    """The stage's initial student from the previous stage's model (layers copied, FFN pruned by importance)."""
    student = derive_student(previous, num_layers=stage.layers, seed=seed, init=init)
    if stage.ffn_fraction < previous_ffn_fraction:
        from edgekit.prune import PrunePlan, prune_model

        cut = 1.0 - stage.ffn_fraction / previous_ffn_fraction
        student, _ = prune_model(student, PrunePlan(ffn=cut), calibration, "activation", check_gguf=False)
    return student.eval()


def progressive_distill(
    teacher,
    stages: list[Stage],
    train_ids: torch.Tensor,
    config: DistillConfig | list[DistillConfig],
    *,
    heldout_ids: torch.Tensor | None = None,
    workdir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    calibration_rows: int = 16,
    init: str = "teacher",
) -> ProgressiveResult:
    """Distill ``teacher`` through ``stages`` (last = final student); ``config`` per stage or shared.

    ``init="random"`` starts the *first* stage's student from scratch (later stages always copy
    the previous stage's layers: that is the point of going through it).

    Every stage's held-out metrics compare its student with its own teacher (``kl``, ``top1``)
    and with the original teacher (``kl_to_original``, ``top1_to_original``).
    """
    from edgekit.distill.monitor import model_logits

    configs = config if isinstance(config, list) else [config] * len(stages)
    if len(configs) != len(stages):
        raise ValueError(f"{len(configs)} configs for {len(stages)} stages")
    original = model_logits(teacher, heldout_ids) if heldout_ids is not None else None
    current, current_ffn, result = teacher, 1.0, ProgressiveResult(None)
    for i, (stage, cfg) in enumerate(zip(stages, configs, strict=True)):
        folder = Path(workdir) / f"stage-{i + 1}" if workdir is not None else None
        done = _load_finished(folder) if (folder is not None and resume) else None
        if done is not None:
            student, info = done
        else:
            first_init = init if i == 0 else "teacher"
            initial = stage_student(current, stage, current_ffn, train_ids[:calibration_rows], cfg.seed, first_init)
            run = distill(
                current,
                initial,
                train_ids,
                cfg,
                heldout_ids=heldout_ids,
                workdir=folder / "run" if folder is not None else None,
                resume=resume,
                progress=progress,
                heldout_teacher_logits=original if i == 0 or original is None else model_logits(current, heldout_ids),
                reference_logits=original if i > 0 else None,
            )
            student = run.student
            info = {"stage": i + 1, "shape": asdict(stage), "final": run.final, "history": run.history}
            if folder is not None:
                _save_finished(folder, student, info)
        result.stages.append(info)
        current, current_ffn = student, stage.ffn_fraction
    result.student = current
    return result


def _save_finished(folder: Path, student, info: dict) -> None:
    """The stage's student (safetensors + config) and ``stage.json``, written only once it finished."""
    with atomic_path(folder / "model") as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
    write_json_atomic(folder / STAGE_INFO, json.loads(json.dumps(info)))


def _load_finished(folder: Path):
    """(student, info) of a finished stage, or None if the stage has not finished."""
    if not (folder / STAGE_INFO).is_file() or not (folder / "model").is_dir():
        return None
    from transformers import AutoModelForCausalLM

    from edgekit.fileio import read_json

    student = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32)
    return student.eval(), read_json(folder / STAGE_INFO)
