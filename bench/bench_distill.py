"""Distillation methods on the demo teacher, and peak memory of the fused loss vs the naive one.

As a script:
    python bench/bench_distill.py quality [--steps 60] [--threads 1]   # methods + temperature sweep
    python bench/bench_distill.py memory [--tokens 8192] [--vocab 32000]  # peak RSS, one child per loss

quality: same student (2 of the demo teacher's 4 layers, initialised from it), same rows, same step
budget; held-out perplexity and KL(teacher ‖ student) for hard labels only, soft KD, combined, soft
KD from a top-K cache (K = 64), and soft KD at T ∈ {1, 2, 4, 8}. Prints a markdown table.

memory: each loss runs forward + backward in a fresh child process (so allocator caches from one do
not hide the other's peak) from student hidden states [tokens, d] and lm_head weight [vocab, d] (and
the teacher's the same way); the figure is the child's peak RSS minus its RSS once the inputs exist.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _data(tokenizer, seq_len: int, rows: int, heldout_rows: int):
    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents

    train_docs, heldout_docs = split_documents(builtin_documents())
    train = pack(tokenize_documents(tokenizer, train_docs), seq_len, rows)
    heldout = pack(tokenize_documents(tokenizer, heldout_docs), seq_len, heldout_rows)
    return train, heldout


def quality(
    steps: int,
    seq_len: int,
    rows: int,
    batch: int,
    cache_ks=(64,),
    only_cache=False,
    cache_tail="bucket",
    cache_alpha=0.0,
) -> list[dict]:
    """Held-out ppl / KL per method; every run starts from the same derived student."""
    from edgekit.demo import demo_teacher
    from edgekit.distill import DistillConfig, derive_student, distill
    from edgekit.distill.cache import build_topk_cache
    from edgekit.distill.monitor import evaluate, model_logits
    from edgekit.models import load_model, load_tokenizer

    path = demo_teacher(progress=False)
    teacher, tok = load_model(path), load_tokenizer(path)
    train, heldout = _data(tok, seq_len, rows, 8)
    t_heldout = model_logits(teacher, heldout)
    base = DistillConfig(steps=steps, batch_size=batch, seq_len=seq_len, lr=2e-3, warmup_steps=steps // 10)
    runs = [("hard labels only", replace(base, alpha=1.0), False)]
    runs += [(f"soft KD, T={t}", replace(base, alpha=0.0, temperature=float(t)), False) for t in (1, 2, 4, 8)]
    runs += [("combined α=0.5, T=2", replace(base, alpha=0.5, temperature=2.0), False)]
    cached = replace(base, alpha=cache_alpha, temperature=1.0, cache_tail=cache_tail)
    label = f"{cache_tail} tail, α={cache_alpha:g}, T=1"
    runs += [(f"KD from top-{k} cache ({label})", cached, k) for k in cache_ks]
    if only_cache:
        runs = [r for r in runs if r[2]]
    student0 = derive_student(teacher, num_layers=2)
    results = [{"method": "student at init (no training)", **evaluate(t_heldout, student0, heldout)}]
    for name, config, from_cache in runs:
        student = derive_student(teacher, num_layers=2)
        started = time.perf_counter()
        if from_cache:
            cache_dir = Path(tempfile.mkdtemp(prefix="edgekit-bench-cache-"))
            cache = build_topk_cache(teacher, train, cache_dir, k=from_cache, shard_rows=32)
            distill(None, student, train, config, topk_cache=cache, progress=False)
        else:
            distill(teacher, student, train, config, progress=False)
        entry = {"method": name, **evaluate(t_heldout, student, heldout), "seconds": time.perf_counter() - started}
        if from_cache:
            tail = torch.cat([cache.batch(torch.arange(i, min(i + 32, len(cache))))["tail"] for i in (0, 32)])
            entry.update(cache_bytes_per_token=cache.bytes_per_token, mean_tail_mass=float(tail.mean()))
        results.append(entry)
        print(json.dumps(entry), flush=True)
    return results


def _hwm_kib() -> int:
    """This process's peak RSS in KiB: VmHWM (per address space, reset by exec), else ru_maxrss.

    ru_maxrss survives execve, so a child could report its parent's peak; VmHWM cannot.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_child(kind: str, tokens: int, vocab: int, d: int, chunk: int) -> None:
    """Runs in the child: build inputs, note RSS, run loss + backward, print the peak delta in MiB."""
    torch.set_num_threads(1)
    from edgekit.distill.fused import fused_kd_loss
    from edgekit.distill.losses import soft_kl

    def inputs(n: int, v: int):
        g = torch.Generator().manual_seed(0)
        h = torch.randn(n, d, generator=g, requires_grad=True)
        w = (torch.randn(v, d, generator=g) * 0.05).requires_grad_(True)
        return h, w, torch.randn(n, d, generator=g), torch.randn(v, d, generator=g) * 0.05

    def run(h, w, th, tw):
        if kind == "naive":
            loss = soft_kl(h @ w.t(), th @ tw.t(), 2.0)
        else:
            loss = fused_kd_loss(h, w, teacher_hidden=th, teacher_weight=tw, temperature=2.0, chunk=chunk)
        loss.backward()
        return loss

    run(*inputs(64, 128))  # warm up autograd, oneDNN and thread pools outside the measurement
    h, w, th, tw = inputs(tokens, vocab)
    base = _hwm_kib()
    started = time.perf_counter()
    loss = run(h, w, th, tw)
    seconds = time.perf_counter() - started
    peak = _hwm_kib()
    print(json.dumps({"kind": kind, "peak_mib": (peak - base) / 1024, "loss": loss.item(), "seconds": seconds}))


def memory(tokens: int, vocab: int, d: int, chunk: int) -> list[dict]:
    """Peak extra memory of naive vs fused KD loss (forward + backward), each in its own process."""
    out = []
    for kind in ("naive", "fused"):
        cmd = [sys.executable, __file__, "_child", kind, str(tokens), str(vocab), str(d), str(chunk)]
        # a fixed mmap threshold makes glibc return every freed tensor to the OS at once, so RSS tracks
        # live tensors instead of the allocator's high-water mark of recycled heap
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    logits_mib = tokens * vocab * 4 / 2**20
    for entry in out:
        entry["logits_tensors"] = entry["peak_mib"] / logits_mib  # in units of one fp32 [tokens, vocab]
    out.append({"kind": "fused / naive", "ratio": out[1]["peak_mib"] / out[0]["peak_mib"]})
    return out


def _markdown(results: list[dict]) -> str:
    lines = ["| method | held-out ppl | KL(teacher‖student) | KL rare | top-1 |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['ppl']:.1f} | {r['kl']:.3f} | {r['kl_rare']:.3f} | {r['top1']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        _peak_child(argv[1], *(int(x) for x in argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["quality", "memory"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-k", type=int, nargs="+", default=[64], help="K of each top-K cache run")
    parser.add_argument("--only-cache", action="store_true", help="run only the cache rows")
    parser.add_argument("--cache-tail", default="bucket", choices=["bucket", "uniform"])
    parser.add_argument("--cache-alpha", type=float, default=0.0, help="hard-label weight of the cache runs")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=512)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "quality":
        results = quality(
            args.steps,
            args.seq_len,
            args.rows,
            args.batch,
            tuple(args.cache_k),
            args.only_cache,
            args.cache_tail,
            args.cache_alpha,
        )
        print(_markdown(results))
    else:
        for entry in memory(args.tokens, args.vocab, args.hidden, args.chunk):
            print(json.dumps(entry))


if __name__ == "__main__":
    main()
