"""``edgekit distill``: teacher in, smaller student out, with held-out KL/perplexity to show for it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgekit.cli import options as opt

console = Console()


def distill(
    teacher: str = typer.Argument(..., metavar="TEACHER", help=opt.VOCABULARY["--teacher"]),
    student: str = typer.Option(None, "--student", help="Existing student folder. Default: derive one."),
    layers: int = typer.Option(
        None, "--student-layers", help="Layers of the derived student (every k-th teacher layer). Default: half."
    ),
    out: Path = opt.out_option(Path("distilled"), "Holds model/, run/ and distill.json."),
    steps: int = typer.Option(200, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW, linear warmup then cosine to 10%)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Rows per step (split across ranks under torchrun)."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per training row."),
    alpha: float = typer.Option(
        0.5, "--alpha", help="Weight of the hard-label loss: α·CE + (1−α)·T²·KL. 0 = pure KD, 1 = no teacher."
    ),
    temperature: float = typer.Option(
        2.0,
        "--kd-temperature",
        "-T",
        help="Distillation temperature: softens both distributions so the teacher's near-misses teach (1-4 typical).",
    ),
    loss: str = typer.Option(
        "kl", "--loss", help="kl (forward, mean-seeking), reverse (mode-seeking), jsd (bounded, GKD)."
    ),
    beta: float = typer.Option(0.5, "--beta", help="JSD mixture weight (--loss jsd): →0 forward KL, →1 reverse."),
    data: str = typer.Option("builtin", "--data", help="Training text: .txt, .jsonl ('text'), folder, or builtin."),
    max_rows: int = typer.Option(256, "--max-rows", help="At most this many training rows."),
    topk_cache: Path = typer.Option(
        None, "--topk-cache", help="Cache the teacher's top-K log-probs here once and train from them."
    ),
    topk: int = opt.topk_option("≈4·K+8 bytes per token on disk."),
    cache_tail: str = typer.Option(
        "bucket", "--cache-tail", help="bucket (exact bound) or uniform (spread over the other ids; flat teachers)."
    ),
    align: str = typer.Option("none", "--align", help="Hidden-state alignment: none, mse or cosine."),
    align_attention: float = typer.Option(
        0.0, "--align-attention", help="Weight of attention-map transfer (head-averaged KL, mapped layers)."
    ),
    seq_kd: bool = opt.seq_kd_option("The student learns the teacher's responses."),
    seq_kd_prompts: int = typer.Option(64, "--seq-kd-prompts", help="Prompts for --seq-kd (first words of documents)."),
    seq_kd_tokens: int = typer.Option(64, "--seq-kd-tokens", help="Tokens the teacher writes per prompt (--seq-kd)."),
    on_policy: float = typer.Option(
        0.0, "--on-policy", help="λ: fraction of steps on the student's own samples, scored by the teacher."
    ),
    eval_every: int = typer.Option(
        0, "--eval-every", help="Held-out KL/ppl/top-1 every N steps into OUT/run/monitor.jsonl (0: at the end)."
    ),
    fused: bool = typer.Option(False, "--fused", help="Fused chunked loss: full logits never exist (long contexts)."),
    via: str = typer.Option(
        None,
        "--via",
        help="Progressive: intermediate sizes as fractions of the teacher's layers (xFFN), e.g. 0.5,0.25.",
    ),
    add_teacher: list[str] = typer.Option(
        None,
        "--add-teacher",
        help="Another teacher with the same tokenizer (repeatable): the student learns their mix.",
    ),
    teacher_weights: str = typer.Option(
        None,
        "--teacher-weights",
        help="Weights of the teachers, in order (first = TEACHER), e.g. 0.7,0.3. Default: equal.",
    ),
    teacher_weighting: str = typer.Option(
        "fixed", "--teacher-weighting", help="fixed, or confidence (per token, by each teacher's top-1 probability)."
    ),
    resume: bool = opt.resume_option("From OUT/run/latest; ends with identical weights."),
    device: str = opt.device_option("auto", "bf16 autocast on CUDA."),
    seed: int = opt.seed_option(0, "Data order, sampling and the derived student."),
    quiet: bool = opt.quiet_option(),
    ignore_resources: bool = opt.ignore_resources_option(),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help=opt.VOCABULARY["--dtype"]
        + " For the teacher, also auto (default): its checkpoint precision with fp32 arithmetic (exact targets; a "
        "bf16 teacher takes half the memory of float32). bfloat16/float16 compute in that type (faster, not "
        "exact). The student trains in float32 regardless.",
    ),
) -> None:
    """Distill a teacher into a smaller student and report how close it got.

    The student learns the teacher's whole next-token distribution, not just the right token: at temperature T the teacher's near-misses ("dark knowledge", Hinton 2015) carry most of the signal, and the T² factor keeps that signal's gradient scale independent of T. Held-out KL(teacher ‖ student), top-1 agreement and perplexity are printed at the end; see docs/distillation.md.

    Any causal LM that transformers loads can be the teacher (only its forward pass is used, e.g. with --student DIR); a student derived from the teacher, pruning and export need one of the families in docs/families.md.

    Examples:

      edgekit distill demo --student-layers 2 --steps 300 --out distilled/demo

      edgekit distill ./teacher --topk-cache cache/ --alpha 0 -T 1     (teacher run once, then unloaded)

      edgekit distill ./teacher --student ./other-tokenizer --seq-kd   (different vocabularies)

      torchrun --nproc-per-node 2 -m edgekit distill demo --batch-size 8   (DDP, gloo on CPU)

      edgekit distill ./teacher --via 0.5,0.25 --student-layers 2    (progressive: teacher → 1/2 → 1/4 → 2 layers)

      edgekit distill ./teacher-a --add-teacher ./teacher-b --teacher-weights 0.6,0.4   (multi-teacher)

    Memory: by default (--dtype auto) a bf16 teacher stays bf16 and computes in fp32 one layer at a time, so its soft targets equal the fp32 teacher's at half the memory; see docs/distillation.md for measured peaks.

    Writes OUT/model (the student), OUT/run (checkpoints, monitor.jsonl) and OUT/distill.json.
    """
    from edgekit.distill.job import LOSS_NAMES, run_job
    from edgekit.distill.trainer import DistillConfig
    from edgekit.errors import ConfigError, Problem
    from edgekit.loading import using

    problems = []
    if loss not in LOSS_NAMES:
        problems.append(Problem("--loss", "", f"{loss!r} is not one of {', '.join(LOSS_NAMES)}"))
    if align not in ("none", "mse", "cosine"):
        problems.append(Problem("--align", "", f"{align!r} is not one of none, mse, cosine"))
    if cache_tail not in ("bucket", "uniform"):
        problems.append(Problem("--cache-tail", "", f"{cache_tail!r} is not one of bucket, uniform"))
    if not 0.0 <= alpha <= 1.0:
        problems.append(Problem("--alpha", "", f"{alpha} is outside [0, 1]"))
    if not 0.0 <= on_policy <= 1.0:
        problems.append(Problem("--on-policy", "", f"{on_policy} is outside [0, 1]"))
    if steps < 1:
        problems.append(Problem("--steps", "", f"{steps} must be >= 1"))
    if batch_size < 1:
        problems.append(Problem("--batch-size", "", f"{batch_size} must be >= 1"))
    if temperature <= 0:
        problems.append(Problem("--kd-temperature", "", f"{temperature} must be > 0"))
    if topk_cache is not None and (seq_kd or on_policy > 0 or align != "none" or align_attention > 0):
        problems.append(Problem("--topk-cache", "", "trains without the teacher; drop --seq-kd/--on-policy/--align*"))
    weights = _weights(teacher_weights, 1 + len(add_teacher or []), problems)
    if teacher_weighting not in ("fixed", "confidence"):
        problems.append(Problem("--teacher-weighting", "", f"{teacher_weighting!r} is not one of fixed, confidence"))
    if via is not None:
        from edgekit.distill.progressive import parse_via

        try:
            parse_via(via)
        except ConfigError as exc:
            problems.extend(exc.problems)
    from edgekit.distill.teacher import TEACHER_DTYPES

    if dtype not in TEACHER_DTYPES:
        problems.append(Problem("--dtype", "", f"{dtype!r} is not one of {', '.join(TEACHER_DTYPES)}"))
    if problems:
        raise ConfigError(problems)
    config = DistillConfig(
        steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, warmup_steps=max(1, steps // 10),
        temperature=temperature, alpha=alpha, divergence=LOSS_NAMES[loss], beta=beta, fused=fused, align=align,
        cache_tail=cache_tail, align_attention=align_attention, on_policy=on_policy, eval_every=eval_every,
        checkpoint_every=max(1, min(50, steps)), seed=seed, device=device,
    )  # fmt: skip
    load = opt.load_options(revision, cache_dir, trust_remote_code, "float32" if dtype == "auto" else dtype)
    with using([teacher, *(add_teacher or [])], load):
        _check_resources(teacher, student, layers, batch_size, seq_len, out, ignore_resources)
        summary = run_job(
            teacher, out, config, student=student, layers=layers, data=data, max_rows=max_rows,
            topk_cache=topk_cache, topk=topk, seq_kd=seq_kd, seq_kd_prompts=seq_kd_prompts,
            seq_kd_tokens=seq_kd_tokens, resume=resume, progress=not quiet, via=via, add_teachers=add_teacher or None,
            teacher_weights=weights, teacher_weighting=teacher_weighting, teacher_dtype=dtype,
        )  # fmt: skip
    _print_summary(summary, out)


def _check_resources(teacher: str, student: str | None, layers: int | None, batch: int, seq: int, out: Path,
                     ignore: bool) -> None:  # fmt: skip
    """Refuse before loading the teacher if this machine cannot hold a training step (``edgekit.resources``)."""
    import copy

    from edgekit import resources
    from edgekit.pipeline.preflight import teacher_config
    from edgekit.pipeline.preflight_resources import check_command

    t_config = teacher_config(teacher, False)
    if student:
        from edgekit.models import load_config

        s_config = load_config(student)
    else:  # the student load_student derives: every k-th layer, half the depth by default
        s_config = copy.deepcopy(t_config)
        s_config.num_hidden_layers = layers or max(1, t_config.num_hidden_layers // 2)
    check_command("distill", [resources.distill_step(t_config, s_config, batch, seq)], out, ignore)


def _weights(text: str | None, teachers: int, problems: list) -> list[float] | None:
    """``--teacher-weights 0.7,0.3`` -> [0.7, 0.3]; a problem is noted when it does not fit the teachers."""
    from edgekit.errors import Problem

    if text is None:
        return None
    try:
        weights = [float(x) for x in text.split(",")]
    except ValueError:
        problems.append(Problem("--teacher-weights", "", f"{text!r}: expected numbers separated by commas"))
        return None
    if len(weights) != teachers or any(w < 0 for w in weights) or sum(weights) <= 0:
        problems.append(Problem("--teacher-weights", "", f"{text!r}: need {teachers} weights >= 0 with a positive sum"))
        return None
    return weights


def _print_summary(summary: dict, out: Path) -> None:
    table = Table(title="held-out: student vs teacher")
    table.add_column("metric")
    table.add_column("value", justify="right")
    heldout = summary.get("heldout", {})
    rows = [
        ("KL(teacher ‖ student), nats/token", heldout.get("kl")),
        ("KL on rare tokens", heldout.get("kl_rare")),
        ("top-1 agreement", heldout.get("top1")),
        ("student perplexity", heldout.get("ppl")),
        ("teacher perplexity", heldout.get("ppl_teacher")),
        ("cache bytes/token", summary.get("cache_bytes_per_token")),
    ]
    if "stages" in summary:  # progressive: the first rows compare with the last stage's teacher
        for stage in summary["stages"]:
            kl = stage["heldout"].get("kl_to_original", stage["heldout"].get("kl"))
            rows.append((f"stage {stage['stage']} ({stage['shape']['layers']} layers): KL to the original", kl))
    for name, value in rows:
        if value is not None:
            table.add_row(name, f"{value:.4g}")
    console.print(table)
    console.print(
        f"[green]wrote[/] {out / 'model'}  ({summary['steps']} steps, final loss {summary['final_loss']:.4f})"
    )


def register(app: typer.Typer) -> None:
    """Add ``distill`` to the CLI."""
    app.command("distill", cls=opt.Command)(distill)
