"""What distillation buys: every method at equal student size, steps and tokens, from a strong teacher.

    EDGEKIT_CACHE_DIR=/work/cache python bench/bench_distill_efficacy.py [--steps 40]

The teacher must be clearly stronger than anything the student can learn from the data alone in
its budget, or the comparison says nothing. A student made of the demo teacher's own layers is
not such a setting: it inherits the teacher's 300 steps of training and, trained on for 60 more
with hard labels, beats the (undertrained) teacher (bench_distill.py). So here the students start
from **random weights** (2 layers of the teacher's width): the teacher has seen ~15x the tokens a
student sees here. Teacher A is the demo teacher; teacher B the same recipe with another seed
and half the width (``--b-hidden``; a third of A's training cost), for the multi-teacher rows.
``--contrast`` adds two rows with students copied from teacher A's layers.

Every row trains on the same rows for the same number of optimizer steps of the same batch, and
is evaluated on the same held-out rows: perplexity, KL(teacher A ‖ student), top-1 agreement
with teacher A, and the share of the gap between the hard-label student and teacher A's
perplexity that the method closes, (ppl_hard − ppl) / (ppl_hard − ppl_teacher): 1 = as good as
the teacher, 0 = no better than hard labels, negative = worse. Progressive rows go 4 → 3 → 2
layers (the 3-layer assistant from scratch, the final student copied from it); "equal total"
splits the step budget between the two stages, the other gives each stage the full budget
(twice the compute, said so in the row). Writes a JSON (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _teachers(teacher_steps: int, b_hidden: int):
    """Teacher A: the demo recipe; B: another seed and hidden width ``b_hidden`` (FFN 3x), same tokenizer."""
    from edgekit.demo import DemoRecipe, demo_info, demo_teacher
    from edgekit.models import load_model, load_tokenizer

    recipes = [
        DemoRecipe(steps=teacher_steps),
        DemoRecipe(steps=teacher_steps, seed=1, hidden_size=b_hidden, intermediate_size=3 * b_hidden),
    ]
    paths = [demo_teacher(r, progress=False) for r in recipes]
    toks = [load_tokenizer(p) for p in paths]
    if toks[0].get_vocab() != toks[1].get_vocab():
        raise SystemExit("the two demo teachers' tokenizers differ; the multi-teacher rows need one tokenizer")
    info = [demo_info(p) for p in paths]
    return [load_model(p) for p in paths], toks[0], info


def _data(tokenizer, seq_len: int, rows: int, heldout_rows: int):
    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents

    train_docs, heldout_docs = split_documents(builtin_documents())
    train = pack(tokenize_documents(tokenizer, train_docs), seq_len, rows)
    heldout = pack(tokenize_documents(tokenizer, heldout_docs), seq_len, heldout_rows)
    return train, heldout


def run(
    steps: int,
    teacher_steps: int,
    seq_len: int,
    rows: int,
    batch: int,
    heldout_rows: int,
    k: int,
    contrast: bool,
    b_hidden: int = 128,
) -> dict:
    from edgekit.distill import DistillConfig, derive_student, distill
    from edgekit.distill.cache import build_topk_cache
    from edgekit.distill.monitor import evaluate, model_logits
    from edgekit.distill.multi import TeacherEnsemble
    from edgekit.distill.progressive import Stage, progressive_distill

    (a, b), tok, info = _teachers(teacher_steps, b_hidden)
    train, heldout = _data(tok, seq_len, rows, heldout_rows)
    t_a = model_logits(a, heldout)
    base = DistillConfig(steps=steps, batch_size=batch, seq_len=seq_len, lr=2e-3, warmup_steps=max(1, steps // 10))
    soft = replace(base, alpha=0.0, temperature=1.0)

    def student(init: str = "random"):
        return derive_student(a, num_layers=2, init=init)

    def single(config, teacher=a, cache=None, init: str = "random"):
        s = student(init)
        return distill(None if cache else teacher, s, train, config, topk_cache=cache, progress=False).student

    def cached():
        folder = Path(tempfile.mkdtemp(prefix="edgekit-efficacy-cache-"))
        return single(soft, cache=build_topk_cache(a, train, folder, k=k, shard_rows=32))

    def progressive(split: bool):
        stage_steps = max(1, steps // 2) if split else steps
        config = replace(soft, steps=stage_steps, warmup_steps=max(1, stage_steps // 10))
        return progressive_distill(a, [Stage(3), Stage(2)], train, config, progress=False, init="random").student

    ensemble, confident = TeacherEnsemble([a, b]), TeacherEnsemble([a, b], None, "confidence")
    hard, copied = replace(base, alpha=1.0), "teacher"
    methods = [
        ("student at init (random, 2 layers, no training)", student, 0),
        ("hard labels only (α = 1)", lambda: single(hard), steps),
        ("soft KD (α = 0, T = 1)", lambda: single(soft), steps),
        ("combined (α = 0.5, T = 2)", lambda: single(replace(base, alpha=0.5, temperature=2.0)), steps),
        (f"soft KD from a top-{k} cache (T = 1)", cached, steps),
        ("progressive 4 → 3 → 2, equal total steps", lambda: progressive(True), steps),
        ("progressive 4 → 3 → 2, full steps per stage (2x compute)", lambda: progressive(False), 2 * steps),
        ("multi-teacher A + B, fixed ½ ½ (T = 1)", lambda: single(soft, ensemble), steps),
        ("multi-teacher A + B, confidence (T = 1)", lambda: single(soft, confident), steps),
    ]  # fmt: skip
    if contrast:
        methods += [
            ("contrast: copied from A's layers, hard labels", lambda: single(hard, init=copied), steps),
            ("contrast: copied from A's layers, soft KD (T = 1)", lambda: single(soft, init=copied), steps),
        ]
    results = []
    for name, make, student_steps in methods:
        started = time.perf_counter()
        model = make()
        entry = {"method": name, "student_steps": student_steps, **evaluate(t_a, model.eval(), heldout)}
        entry["seconds"] = round(time.perf_counter() - started, 1)
        results.append(entry)
        print(json.dumps(entry), flush=True)
    ppl_teacher = results[0]["ppl_teacher"]
    ppl_hard = results[1]["ppl"]  # hard labels from the same (random) start
    for r in results:
        r["gap_closed"] = (ppl_hard - r["ppl"]) / (ppl_hard - ppl_teacher) if ppl_hard != ppl_teacher else None
    mixture = model_logits(ensemble.at(1.0), heldout)
    from edgekit.quality import perplexity

    keep = torch.ones(len(t_a), dtype=torch.bool)
    keep[seq_len - 1 :: seq_len] = False
    keep = keep.numpy()
    targets = heldout[:, 1:].reshape(-1).numpy()
    teachers = {
        "A": {"recipe_steps": teacher_steps, "seed": 0, "heldout_ppl": ppl_teacher, "demo_info": info[0]},
        "B": {"seed": 1, "hidden": b_hidden, "heldout_ppl": perplexity(model_logits(b, heldout)[keep], targets)},
        "A+B mixture": {"heldout_ppl": perplexity(mixture[keep], targets)},
    }
    setup = {"steps": steps, "batch": batch, "seq_len": seq_len, "rows": rows, "heldout_rows": heldout_rows, "k": k}
    return {"setup": setup, "teachers": teachers, "results": results, "threads": torch.get_num_threads()}


def markdown(report: dict) -> str:
    lines = [
        "| method | student steps | held-out ppl | gap closed | KL(A ‖ student) | top-1 with A |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        gap = "—" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"
        lines.append(
            f"| {r['method']} | {r['student_steps']} | {r['ppl']:.1f} | {gap} | {r['kl']:.3f} | {r['top1']:.3f} |"
        )
    t = report["teachers"]
    lines.append(
        f"\nteacher A held-out ppl {t['A']['heldout_ppl']:.1f}, teacher B {t['B']['heldout_ppl']:.1f}, "
        f"their ½-½ mixture {t['A+B mixture']['heldout_ppl']:.1f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per student")
    parser.add_argument(
        "--teacher-steps", type=int, default=300, help="training steps of teachers A and B (300: the demo teacher)"
    )
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heldout-rows", type=int, default=16)
    parser.add_argument("--k", type=int, default=64, help="K of the top-K cache row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--b-hidden", type=int, default=128, help="teacher B's hidden width (A's: 256)")
    parser.add_argument("--contrast", action="store_true", help="add students copied from teacher A's layers")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-distill-efficacy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(
        args.steps, args.teacher_steps, args.seq_len, args.rows, args.batch, args.heldout_rows, args.k, args.contrast,
        args.b_hidden,
    )  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
