"""Prune the demo teacher to about half its parameters; how much does each importance criterion keep,
and does a pruned start beat a random start under the same distillation budget?

Run:  python bench/bench_prune.py [--steps 60] [--out bench-prune.json]
Reports held-out perplexity (built-in corpus, held-out split) for:
  (i)   each criterion, right after pruning (no training);
  (ii)  the pruned model after ``--steps`` of distillation from the teacher;
  (iii) a random-initialised model of the same shape after the same distillation.
Every number depends on the seed and the tiny demo model; the docs quote them as measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgekit.data import heldout_set, training_set
from edgekit.demo import demo_teacher
from edgekit.distill import DistillConfig, distill
from edgekit.distill.monitor import evaluate, model_logits
from edgekit.models import count_parameters, load_model, load_tokenizer
from edgekit.prune import PrunePlan, budget_plan, prune_model
from edgekit.prune.plan import params_fit

CRITERIA = ("activation", "magnitude", "taylor", "loo")


def held_out(teacher_logits, model, rows) -> dict[str, float]:
    r = evaluate(teacher_logits, model, rows)
    return {"ppl": round(r["ppl"], 2), "kl": round(r["kl"], 4), "top1": round(r["top1"], 4)}


def recover(teacher, student, train, heldout, steps: int, lr: float) -> dict[str, float]:
    config = DistillConfig(steps=steps, batch_size=8, lr=lr, warmup_steps=max(1, steps // 10), seed=0)
    started = time.perf_counter()
    result = distill(teacher, student, train, config, heldout_ids=heldout, progress=False)
    return {**result.final, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="distillation steps (batch 8 x 256 tokens)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layers", type=int, default=1, help="whole layers removed besides the width budget")
    parser.add_argument("--distill", default="activation,taylor", help="criteria whose pruned model is distilled")
    parser.add_argument("--out", type=Path, default=Path("bench-prune.json"))
    parser.add_argument("--ablation", action="store_true", help="instead: width-only and iterative (2 steps) arms")
    parser.add_argument("--spread", type=int, default=0, help="instead: (i) on N disjoint calibration sets")
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = demo_teacher(progress=False)
    teacher, tokenizer = load_model(folder), load_tokenizer(folder)
    heldout, train = heldout_set(tokenizer, 256, 16), training_set(tokenizer, 256, 512)
    calibration = train[:16]
    teacher_logits = model_logits(teacher, heldout)
    total = count_parameters(teacher)
    plan = budget_plan(teacher.config, params_fit(total // 2), ("ffn", "hidden"), PrunePlan(layers=args.layers))
    if args.spread:
        results = spread(teacher, teacher_logits, train, heldout, plan, args.spread)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        return
    if args.ablation:
        results = ablation(teacher, teacher_logits, train, heldout, calibration, args)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        return
    results = {"teacher": {"parameters": total, **held_out(teacher_logits, teacher, heldout)}, "plan": plan.__dict__}
    pruned_models = {}
    for criterion in CRITERIA:
        started = time.perf_counter()
        model, report = prune_model(teacher, plan, calibration, criterion=criterion)
        pruned_models[criterion] = model
        results[f"pruned/{criterion}"] = {
            "parameters": count_parameters(model),
            "layers_kept": report["layers_kept"],
            "score_seconds": round(time.perf_counter() - started, 1),
            **held_out(teacher_logits, model, heldout),
        }
        print(criterion, results[f"pruned/{criterion}"], flush=True)
    for criterion in args.distill.split(","):
        results[f"pruned/{criterion}+distill"] = recover(
            teacher, pruned_models[criterion], train, heldout, args.steps, args.lr
        )
        print(criterion, "+distill", results[f"pruned/{criterion}+distill"], flush=True)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    scratch = AutoModelForCausalLM.from_config(pruned_models["activation"].config, dtype=torch.float32)
    results["random-init+distill"] = recover(teacher, scratch, train, heldout, args.steps, args.lr)
    print("random +distill", results["random-init+distill"], flush=True)
    shape = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
    results["shape"] = {k: getattr(scratch.config, k) for k in shape}
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(results, indent=2, default=str))


def spread(teacher, teacher_logits, train, heldout, plan, sets: int) -> dict:
    """Held-out ppl right after pruning, per criterion, on ``sets`` disjoint 16-row calibration sets:
    how much of the difference between criteria is the calibration sample."""
    results = {}
    for criterion in CRITERIA:
        ppl = []
        for k in range(sets):
            model, _ = prune_model(teacher, plan, train[16 * k : 16 * (k + 1)], criterion=criterion)
            ppl.append(held_out(teacher_logits, model, heldout)["ppl"])
        results[criterion] = {"ppl": ppl, "min": min(ppl), "max": max(ppl), "mean": round(sum(ppl) / sets, 2)}
        print(criterion, results[criterion], flush=True)
    return results


def ablation(teacher, teacher_logits, train, heldout, calibration, args) -> dict:
    """Same half-size budget and distillation steps: width only (no layer removed), and iterative
    (two prune steps, each followed by half the steps) against the one-shot run of ``main``."""
    from edgekit.prune.schedule import distill_recovery, iterative_prune

    total = count_parameters(teacher)
    results = {}
    width = budget_plan(teacher.config, params_fit(total // 2), ("ffn", "hidden"))
    model, _ = prune_model(teacher, width, calibration, criterion="activation")
    after = held_out(teacher_logits, model, heldout)
    results["width-only/activation"] = {"parameters": count_parameters(model), **after}
    results["width-only/activation+distill"] = recover(teacher, model, train, heldout, args.steps, args.lr)
    print(results, flush=True)
    plan = budget_plan(teacher.config, params_fit(total // 2), ("ffn", "hidden"), PrunePlan(layers=args.layers))
    fix = distill_recovery(teacher, train, args.steps // 2, lr=args.lr)
    started = time.perf_counter()
    model, _ = iterative_prune(teacher, plan, calibration, criterion="activation", iterations=2, recover=fix)
    results["iterative-2/activation+distill"] = {
        "parameters": count_parameters(model),
        "seconds": round(time.perf_counter() - started, 1),
        **evaluate(teacher_logits, model, heldout),
    }
    print(results, flush=True)
    return results


if __name__ == "__main__":
    main()
