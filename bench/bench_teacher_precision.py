"""How far a bf16-arithmetic teacher's soft targets are from the fp32 teacher's (docs/distillation.md).

    python bench/bench_teacher_precision.py MODEL_DIR [--rows 4] [--seq 256] [--temperature 2] [--topk 64]

Prints, over held-out rows of the built-in corpus: mean / p99 / max KL(fp32 ‖ bf16) of the
softened distributions (nats/token), the teacher's entropy (against uniform), top-1 agreement, the
mean and worst overlap of the top-K id sets a ``--topk-cache`` would store, and each forward's
seconds. The fp32 teacher is the checkpoint upcast (exact for bf16 checkpoints); the bf16 one is the
same weights with bf16 arithmetic, what ``edgekit distill --dtype bfloat16`` runs. ``--dtype auto``
(fp32 arithmetic on bf16-resident weights) is exact by construction (tests/test_distill_teacher_dtype.py).
Memory: the fp32 model (4 bytes/weight) plus two [rows*seq, vocab] fp32 log-probability tables.
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def soft_targets(model, rows: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """Log-probabilities [rows*seq, vocab] at ``temperature`` (one row per forward) and the seconds taken."""
    start, out = time.perf_counter(), []
    with torch.no_grad():
        for row in rows:
            out.append(torch.log_softmax(model(input_ids=row[None]).logits.float()[0] / temperature, -1))
    return torch.cat(out), time.perf_counter() - start


def compare(a: torch.Tensor, b: torch.Tensor, k: int) -> dict[str, float]:
    """KL(a ‖ b) per token and top-1 / top-K agreement of two log-probability tables [tokens, vocab]."""
    kl = (a.exp() * (a - b)).sum(-1)
    top_a, top_b = a.topk(k, -1).indices, b.topk(k, -1).indices
    overlap = torch.tensor([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(top_a, top_b, strict=True)])
    return {
        "kl_mean": float(kl.mean()),
        "kl_p99": float(kl.quantile(0.99)),
        "kl_max": float(kl.max()),
        "entropy": float(-(a.exp() * a).sum(-1).mean()),
        "uniform_entropy": math.log(a.shape[-1]),
        "top1": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "topk_overlap_mean": float(overlap.mean()),
        "topk_overlap_min": float(overlap.min()),
    }


def main() -> None:
    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents
    from edgekit.models import load_model, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--topk", type=int, default=64)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model)
    rows = pack(tokenize_documents(tokenizer, split_documents(builtin_documents())[1]), args.seq, args.rows)
    model = load_model(args.model, dtype=torch.float32)
    fp32, fp32_s = soft_targets(model, rows, args.temperature)
    bf16, bf16_s = soft_targets(model.to(torch.bfloat16), rows, args.temperature)
    result = compare(fp32, bf16, args.topk)
    print(f"{args.model}: T={args.temperature} K={args.topk} tokens={len(fp32)}")
    print(", ".join(f"{name} {value:.4g}" for name, value in result.items()))
    print(f"forward seconds: fp32 {fp32_s:.1f}, bf16 {bf16_s:.1f}")


if __name__ == "__main__":
    main()
