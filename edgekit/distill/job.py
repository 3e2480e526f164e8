"""One distillation job end to end (what ``edgekit distill`` runs): teacher, student, data, method, output.

Output folder layout:
- ``model/``: the student (safetensors + tokenizer), loadable by every later stage;
- ``run/``: checkpoints (``latest/``) and ``monitor.jsonl``; ``--resume`` continues from here;
- ``topk-cache/`` (or the folder given) when training from a teacher top-K cache;
- ``seqkd.jsonl``: teacher responses when running sequence-level KD;
- ``distill.json``: settings, held-out metrics of student and teacher, cache bytes/token.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit.distill.trainer import DistillConfig, distill
from edgekit.errors import InputError
from edgekit.fileio import write_json_atomic

LOSS_NAMES = {"kl": "forward_kl", "reverse": "reverse_kl", "jsd": "jsd"}


def resolve_teacher_path(teacher: str, progress: bool = True) -> str:
    """'demo' builds (or reuses) the built-in demo teacher; anything else is a folder or a hub id."""
    if teacher == "demo":
        from edgekit.demo import demo_teacher

        return str(demo_teacher(progress=progress))
    return teacher


def same_vocabulary(a, b) -> bool:
    """Whether two tokenizers map the same strings to the same ids (logit-level KD needs this)."""
    return a.get_vocab() == b.get_vocab()


def load_student(teacher, teacher_tok, student: str | None, layers: int | None, seq_kd: bool, seed: int):
    """An existing student (same vocabulary unless sequence-level KD) or one derived from the teacher."""
    from edgekit.distill.student import derive_student
    from edgekit.models import load_model, load_tokenizer

    if student is None:
        n = layers or max(1, teacher.config.num_hidden_layers // 2)
        return derive_student(teacher, num_layers=n, seed=seed), teacher_tok
    folder = Path(student)
    if (folder / "config.json").is_file() and not any(folder.glob("*.safetensors")):
        return _student_from_config(folder, teacher_tok, seed)
    model, tok = load_model(student), load_tokenizer(student)
    if not seq_kd and not same_vocabulary(tok, teacher_tok):
        raise InputError(
            student,
            "student tokenizer differs from the teacher's, so logit-level KD is impossible "
            "(the distributions are over different tokens); rerun with --seq-kd",
        )
    return model, tok


def _student_from_config(folder: Path, teacher_tok, seed: int):
    """A randomly initialised student from a config-only folder; it uses the teacher's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.models import load_config

    config = load_config(folder)
    if config.vocab_size < len(teacher_tok):
        raise InputError(folder, f"vocab_size {config.vocab_size} is smaller than the teacher's {len(teacher_tok)}")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32), teacher_tok


def corpus(tokenizer, data: str | None, seq_len: int, max_rows: int | None, heldout_rows: int):
    """(train rows [n, seq], held-out rows [m, seq]) from the built-in corpus or a text file/folder."""
    from edgekit.data import builtin_documents, load_texts, pack, split_documents, tokenize_documents

    docs = builtin_documents() if data in (None, "builtin") else load_texts(data)
    train_docs, heldout_docs = split_documents(docs)
    train = pack(tokenize_documents(tokenizer, train_docs), seq_len, max_rows)
    heldout = pack(tokenize_documents(tokenizer, heldout_docs), seq_len, heldout_rows)
    return train, heldout, train_docs


def seq_kd_rows(teacher, tokenizer, student_tok, docs, out: Path, seq_len: int, n_prompts: int, new_tokens: int):
    """Teacher responses to prompts (each document's first words) -> student rows and prompt lengths."""
    from edgekit.distill.seqkd import generate_responses, read_pairs, sequence_rows

    prompts = [" ".join(d.split()[:8]) for d in docs if len(d.split()) >= 8][:n_prompts]
    generate_responses(teacher, tokenizer, prompts, out, max_new_tokens=new_tokens)
    return sequence_rows(student_tok, read_pairs(out), seq_len)


def run_job(
    teacher: str,
    out: Path,
    config: DistillConfig,
    *,
    student: str | None = None,
    layers: int | None = None,
    data: str | None = None,
    max_rows: int | None = 256,
    heldout_rows: int = 8,
    topk_cache: Path | None = None,
    topk: int = 64,
    seq_kd: bool = False,
    seq_kd_prompts: int = 64,
    seq_kd_tokens: int = 64,
    resume: bool = False,
    progress: bool = True,
    via: str | None = None,
    add_teachers: list[str] | None = None,
    teacher_weights: list[float] | None = None,
    teacher_weighting: str = "fixed",
    teacher_dtype: str = "auto",
) -> dict[str, Any]:
    """Distill ``teacher`` into a student under ``out``; returns (and writes) the summary.

    ``via`` ("0.5,0.25"): progressive distillation through intermediate students (see
    ``progressive``); ``add_teachers``: more teachers with the same tokenizer, mixed with
    ``teacher_weights`` (``fixed`` or per-token ``confidence``; see ``multi``).
    ``teacher_dtype`` (``distill.teacher``): ``auto`` keeps the teacher in its checkpoint precision
    and computes in fp32 (exact; 2 bytes/parameter for a bf16 checkpoint instead of 4).
    """
    from edgekit.distill.teacher import load_teacher, teacher_compute
    from edgekit.models import load_tokenizer

    _check_combination(via, add_teachers, student, seq_kd, topk_cache)
    teacher_path = resolve_teacher_path(teacher, progress)
    t_model, t_tok = load_teacher(teacher_path, teacher_dtype), load_tokenizer(teacher_path)
    with teacher_compute(t_model, teacher_dtype):
        return _run_loaded(
            t_model, t_tok, teacher, out, config, student, layers, data, max_rows, heldout_rows, topk_cache, topk,
            seq_kd, seq_kd_prompts, seq_kd_tokens, resume, progress, via, add_teachers, teacher_weights,
            teacher_weighting,
        )  # fmt: skip


def _run_loaded(t_model, t_tok, teacher, out, config, student, layers, data, max_rows, heldout_rows, topk_cache,
                topk, seq_kd, seq_kd_prompts, seq_kd_tokens, resume, progress, via, add_teachers, teacher_weights,
                teacher_weighting) -> dict[str, Any]:  # fmt: skip
    """``run_job`` once the teacher is loaded (its arguments, in order)."""
    from edgekit.models import save_model

    train, heldout, train_docs = corpus(t_tok, data, config.seq_len, max_rows, heldout_rows)
    if via:
        return _run_progressive(t_model, t_tok, teacher, out, config, via, layers, train, heldout, resume, progress)
    s_model, s_tok = load_student(t_model, t_tok, student, layers, seq_kd, config.seed)
    summary: dict[str, Any] = {"teacher": teacher, "config": asdict(config)}
    run_teacher, cache, prompt_lengths = t_model, None, None
    if add_teachers:
        from edgekit.distill.multi import load_ensemble

        run_teacher, cache = load_ensemble(
            t_model, t_tok, teacher, add_teachers, teacher_weights, teacher_weighting, train, topk_cache, topk, progress
        )
        summary.update(add_teachers=add_teachers, teacher_weights=run_teacher.weights, weighting=teacher_weighting)
        if cache is not None:
            summary["cache_bytes_per_token"] = cache.bytes_per_token
        t_model = run_teacher  # the monitor compares the student with the mixture (at T = 1)
        run_teacher = None if cache is not None else run_teacher
    elif seq_kd:
        train, prompt_lengths = seq_kd_rows(
            t_model, t_tok, s_tok, train_docs, out / "seqkd.jsonl", config.seq_len, seq_kd_prompts, seq_kd_tokens
        )
        config = DistillConfig(**{**asdict(config), "alpha": 1.0})
        run_teacher = None
        if not same_vocabulary(s_tok, t_tok):
            heldout = None  # no logit comparison across vocabularies
    elif topk_cache is not None:
        from edgekit.distill.cache import build_topk_cache

        cache = build_topk_cache(t_model, train, topk_cache, k=topk, progress=progress)
        summary["cache_bytes_per_token"] = cache.bytes_per_token
        run_teacher = None
    from edgekit.distill.report import plot_monitor

    result = distill(
        run_teacher,
        s_model,
        train,
        config,
        workdir=out / "run",
        resume=resume,
        progress=progress,
        topk_cache=cache,
        prompt_lengths=prompt_lengths,
        heldout_ids=heldout,
        heldout_teacher_logits=_heldout_logits(t_model, heldout),
    )
    if heldout is not None:
        summary["heldout"] = result.final
    plot = plot_monitor(result.history, out / "run" / "monitor.png")
    if plot is not None:
        summary["monitor_plot"] = str(plot)
    save_model(result.student, s_tok, out / "model")
    summary["config"] = asdict(config)  # as trained (sequence-level KD forces α = 1)
    summary["steps"] = len(result.history)
    summary["final_loss"] = result.history[-1]["loss"] if result.history else None
    write_json_atomic(out / "distill.json", summary)
    return summary


def _heldout_logits(teacher, heldout):
    """The monitor's teacher logits [rows*seq, vocab]: a teacher ensemble's mixture at T = 1."""
    from edgekit.distill.monitor import model_logits
    from edgekit.distill.multi import TeacherEnsemble

    if heldout is None:
        return None
    return model_logits(teacher.at(1.0) if isinstance(teacher, TeacherEnsemble) else teacher, heldout)


def _check_combination(via, add_teachers, student, seq_kd, topk_cache) -> None:
    """Refuse, all at once, options that progressive or multi-teacher runs cannot combine with."""
    from edgekit.errors import ConfigError, Problem

    problems = []
    if via and (student or seq_kd or topk_cache or add_teachers):
        problems.append(Problem("--via", "", "derives each stage's student itself, from one teacher, without a "
                                "cache: drop --student/--seq-kd/--topk-cache/--add-teacher"))  # fmt: skip
    if add_teachers and seq_kd:
        problems.append(Problem("--add-teacher", "", "sequence-level KD uses one teacher's text; drop --seq-kd"))
    if problems:
        raise ConfigError(problems)


def _run_progressive(t_model, t_tok, teacher, out, config, via, layers, train, heldout, resume, progress):
    """teacher → intermediate students → final student (``via``), each stage resumable; writes the summary."""
    from edgekit.distill.progressive import Stage, parse_via, plan_stages, progressive_distill
    from edgekit.models import save_model

    final_layers = layers or max(1, t_model.config.num_hidden_layers // 2)
    stages = plan_stages(t_model.config.num_hidden_layers, parse_via(via), Stage(final_layers))
    result = progressive_distill(
        t_model, stages, train, config, heldout_ids=heldout, workdir=out / "run", resume=resume, progress=progress
    )
    save_model(result.student, t_tok, out / "model")
    last = result.stages[-1]
    summary: dict[str, Any] = {
        "teacher": teacher,
        "config": asdict(config),
        "via": via,
        "stages": [{"stage": s["stage"], "shape": s["shape"], "heldout": s["final"]} for s in result.stages],
        "heldout": last["final"],
        "steps": len(last["history"]) * len(stages),
        "final_loss": last["history"][-1]["loss"] if last["history"] else None,
    }
    write_json_atomic(out / "distill.json", summary)
    return summary
