"""The bodies of the pipeline's model stages: distill, prune, recover, export, verify, bench.

Each takes flat arguments (paths, plain sections of the build config, the target) and fills the
output folder it is given, returning a JSON-able summary. The SDK functions they call are the
same ones the individual CLI commands use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.pipeline.config import (
    BenchSection,
    DataSection,
    DistillSection,
    ExportSection,
    PruneSection,
    RecoverSection,
    VerifySection,
)
from edgekit.targets import TargetProfile

MODEL_DIR = "model"  # where model stages save their HF folder inside their output


@dataclass
class Corpus:
    """Token rows for one tokenizer: training [n, seq], held-out [m, seq] (fixed), calibration."""

    train: Any
    heldout: Any

    def calibration(self, n: int):
        return self.train[:n]


def load_corpus(tokenizer, data: DataSection) -> Corpus:
    """Training and held-out rows from the built-in corpus or the user's text."""
    from edgekit.data import builtin_documents, load_texts, pack, split_documents, tokenize_documents

    docs = builtin_documents() if data.train == "builtin" else load_texts(data.train)
    train_docs, heldout_docs = split_documents(docs, data.heldout_fraction)
    train = pack(tokenize_documents(tokenizer, train_docs), data.seq_len, data.max_train_sequences)
    heldout = pack(tokenize_documents(tokenizer, heldout_docs), data.seq_len, data.heldout_sequences)
    return Corpus(train, heldout)


def _distill_config(steps: int, lr: float, section: DistillSection, seed: int, data: DataSection):
    from edgekit.distill import DistillConfig

    return DistillConfig(
        steps=steps,
        batch_size=section.batch_size,
        seq_len=data.seq_len,
        lr=lr,
        temperature=section.temperature,
        alpha=section.alpha,
        seed=seed,
    )


def run_distill(
    out: Path,
    scratch: Path,
    teacher_path: str,
    data: DataSection,
    section: DistillSection,
    seed: int,
    resume: bool,
    progress: bool,
) -> dict[str, Any]:
    """Derive a student from the teacher and distill into it; saves ``out/model``."""
    from edgekit.distill import derive_student
    from edgekit.distill.teacher import load_teacher, teacher_compute
    from edgekit.models import count_parameters, load_tokenizer, save_model

    # the teacher stays in its checkpoint precision and computes in fp32 (exact; distill/teacher.py)
    teacher, tokenizer = load_teacher(teacher_path), load_tokenizer(teacher_path)
    corpus = load_corpus(tokenizer, data)
    if section.via:
        with teacher_compute(teacher):
            return _run_progressive(out, scratch, teacher, tokenizer, corpus, section, seed, data, resume, progress)
    student = derive_student(
        teacher, num_layers=section.student_layers, hidden_size=section.student_hidden, init=section.init, seed=seed
    )
    config = _distill_config(section.steps, section.lr, section, seed, data)
    result = _distill_from(teacher, student, corpus, config, scratch, resume, progress)
    save_model(result.student, tokenizer, out / MODEL_DIR)
    return {
        "parameters": count_parameters(result.student),
        "teacher_parameters": count_parameters(teacher),
        "heldout": result.final,
    }


def _run_progressive(out, scratch, teacher, tokenizer, corpus, section, seed, data, resume, progress):
    """``distill.via``: teacher → intermediate students → final student, each stage resumable."""
    from edgekit.distill.progressive import Stage, parse_via, plan_stages, progressive_distill
    from edgekit.models import count_parameters, save_model

    n = teacher.config.num_hidden_layers
    stages = plan_stages(n, parse_via(section.via, "distill.via"), Stage(section.student_layers or n))
    config = _distill_config(section.steps, section.lr, section, seed, data)
    result = progressive_distill(
        teacher, stages, corpus.train, config, heldout_ids=corpus.heldout, workdir=scratch, resume=resume,
        progress=progress, init=section.init,
    )  # fmt: skip
    save_model(result.student, tokenizer, out / MODEL_DIR)
    return {
        "parameters": count_parameters(result.student),
        "teacher_parameters": count_parameters(teacher),
        "heldout": result.stages[-1]["final"],
        "stages": [{"shape": s["shape"], "heldout": s["final"]} for s in result.stages],
    }


def run_prune(out: Path, student_path: Path, data: DataSection, section: PruneSection, round_to: int) -> dict[str, Any]:
    """Structurally prune the student by importance on calibration text; saves ``out/model``."""
    from edgekit.models import count_parameters, load_model, load_tokenizer, save_model
    from edgekit.prune import PrunePlan, prune_model

    model, tokenizer = load_model(student_path), load_tokenizer(student_path)
    corpus = load_corpus(tokenizer, data)
    before = count_parameters(model)
    plan = PrunePlan(
        ffn=section.ffn, heads=section.heads, layers=section.layers, hidden=section.hidden, round_to=round_to
    )
    pruned, report = prune_model(
        model, plan, corpus.calibration(section.calibration_sequences), criterion=section.criterion
    )
    save_model(pruned, tokenizer, out / MODEL_DIR)
    return {"parameters_before": before, "parameters": count_parameters(pruned), "report": report}


def run_recover(
    out: Path,
    scratch: Path,
    teacher_path: str,
    model_path: Path,
    data: DataSection,
    distill_section: DistillSection,
    section: RecoverSection,
    seed: int,
    resume: bool,
    progress: bool,
) -> dict[str, Any]:
    """Distill the teacher into the pruned model to win back what pruning cost; saves ``out/model``."""
    from edgekit.distill.teacher import load_teacher
    from edgekit.models import count_parameters, load_model, load_tokenizer, save_model

    teacher, tokenizer = load_teacher(teacher_path), load_tokenizer(teacher_path)  # as in run_distill
    student = load_model(model_path)
    corpus = load_corpus(tokenizer, data)
    config = _distill_config(section.steps, section.lr, distill_section, seed, data)
    result = _distill_from(teacher, student, corpus, config, scratch, resume, progress)
    save_model(result.student, tokenizer, out / MODEL_DIR)
    return {"parameters": count_parameters(result.student), "heldout": result.final}


def export_plan(target: TargetProfile, section: ExportSection) -> dict[str, list[str]]:
    """Format -> levels to export: the build config where given, else the target's ladder."""
    formats = section.formats or list(target.export.formats)
    levels = {"gguf": section.gguf_levels, "onnx": section.onnx_levels}
    return {fmt: list(levels[fmt] or target.ladder(fmt) or []) for fmt in formats}


def run_export(
    out: Path,
    model_path: Path,
    data: DataSection,
    plan: dict[str, list[str]],
    imatrix: bool,
    calibration_sequences: int,
    progress: bool,
    name: str = "model",
    provenance: dict[str, str] | None = None,
    keep_output_tensor: str | None = None,
    onnx_options: Any = None,
    allocate: str = "none",
) -> dict[str, Any]:
    """Export every planned level; GGUF K-quants use an importance matrix from calibration text.

    ``keep_output_tensor`` (the profile's, e.g. "Q8_0") stores the output and embedding matrices no
    lower than that type at every quantized level. ``allocate`` (auto, measure, fisher or none)
    chooses GGUF tensor types from their sensitivity, probed on the same calibration rows as the
    importance matrix: the build's own training text (``edgekit.export.mix``).

    ``name`` names the files (``<name>-Q4_K_M.gguf``); ``provenance`` is written into them in place
    of this machine's work path, so that a build's artifacts depend only on its inputs.
    """
    from edgekit.models import load_tokenizer

    artifacts: list[dict[str, Any]] = []
    if plan.get("gguf"):
        from edgekit.export.gguf import export_gguf
        from edgekit.export.quantize import keep_output_overrides

        calibration = load_corpus(load_tokenizer(model_path), data).calibration(calibration_sequences)
        paths = export_gguf(
            model_path,
            out / "gguf",
            quants=plan["gguf"],
            imatrix="auto" if imatrix else None,
            calibration_ids=calibration,
            name=name,
            provenance=provenance,
            type_overrides=keep_output_overrides(keep_output_tensor),
            progress=progress,
            allocate=None if allocate == "none" else allocate,
        )
        artifacts += [_artifact_entry(out, p, "gguf", q) for p, q in zip(paths, plan["gguf"], strict=True)]
    if plan.get("onnx"):
        from edgekit.export.onnx import export_onnx

        # onnx_options: the profile's [export.onnx] as BuilderOptions (execution provider, int4 settings)
        paths = export_onnx(model_path, out / "onnx", quants=plan["onnx"], options=onnx_options, progress=progress)
        artifacts += [_artifact_entry(out, p, "onnx", q) for p, q in zip(paths, plan["onnx"], strict=True)]
    return {"artifacts": artifacts}


def _artifact_entry(root: Path, path: Path, fmt: str, quant: str) -> dict[str, Any]:
    from edgekit.export.sidecar import read_sidecar, sidecar_path

    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    entry = {"path": Path(path).relative_to(root).as_posix(), "format": fmt, "quant": quant, "file_size_bytes": size}
    allocation = read_sidecar(path).get("allocation") if sidecar_path(path).is_file() else None
    if allocation:  # the chosen tensor types, as the sidecar records them
        entry["tensor_types"] = allocation["types"]
    return entry


def run_verify(
    out: Path,
    export_dir: Path,
    artifacts: list[dict[str, Any]],
    reference: Path,
    target: TargetProfile,
    section: VerifySection,
) -> dict[str, Any]:
    """Check every artifact against the PyTorch model it came from, with the target's thresholds."""
    from edgekit.export.reference import reference_for
    from edgekit.export.verify import verify_artifact

    reports = []
    with reference_for(reference, max_tokens=section.max_tokens, workdir=out) as ref:  # one load for all
        for entry in artifacts:
            report = verify_artifact(
                export_dir / entry["path"],
                reference,
                level=entry["quant"],
                threshold=target.verify.threshold(entry["quant"]),
                prepared=ref,
            )
            reports.append({**entry, **report.to_dict()})
    return {"reports": reports, "passed": [r["path"] for r in reports if r["passed"]]}


def run_bench(
    out: Path,
    export_dir: Path,
    paths: list[str],
    student: Path,
    teacher: str,
    target: TargetProfile,
    section: BenchSection,
    names: tuple[str, str] = ("model", "teacher"),
) -> dict[str, Any]:
    """Measure every verified artifact, recommend a level and write the report.

    ``names`` (model, teacher) replace the work-folder paths in the results, since the results and
    the report travel in the bundle.
    """
    from edgekit.bench import recommend, run_suite, write_report
    from edgekit.fileio import write_json_atomic

    results = run_suite(
        [export_dir / p for p in paths],
        section.suite,
        target=target,
        reference_model=student,
        teacher_model=teacher,
        out_dir=out,
    )
    relative = {str(export_dir / p): p for p in paths}
    for r in results["results"]:  # the bundle's own paths, not this machine's work folder
        r["artifact"] = relative.get(str(r["artifact"]), r["artifact"])
    results["model"], results["teacher"] = names
    results["recommendation"] = recommend(results, target)
    write_json_atomic(out / "results.json", results)  # again: with bundle paths and the recommendation
    md, html = write_report(results, out)
    return {"recommendation": results["recommendation"], "report_md": md.name, "report_html": html.name}


def _distill_from(teacher, student, corpus, config, scratch, resume, progress):
    """One distillation run with the teacher computing in fp32 (``teacher_compute``): distill and recover."""
    from edgekit.distill import distill
    from edgekit.distill.teacher import teacher_compute

    with teacher_compute(teacher):
        return distill(
            teacher,
            student,
            corpus.train,
            config,
            heldout_ids=corpus.heldout,
            workdir=scratch,
            resume=resume,
            progress=progress,
        )
