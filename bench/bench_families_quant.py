"""Quantized levels per family: Q8_0 and Q4_K_M GGUF (llama.cpp) and int4 ONNX (onnxruntime-genai).

For every registered family: a tiny model (hidden 256, 4 layers, 4 query / 1 KV heads, FFN 768,
512-token BPE vocabulary), trained for a few seconds on the built-in corpus so its next-token
distributions are peaked like a real model's (a random tiny model's are nearly flat, so top-1 is
decided by near-ties), exported through edgekit and verified against PyTorch with each level's
default thresholds (``edgekit.formats``). Q8_0 is also measured on the untrained model, to show
why the per-family test uses the trained one.

    PYTHONPATH=. python bench/bench_families_quant.py [--families gemma2,phi3] [--out bench/results-families-quant.json]

Runs ~1 minute per family on 2 CPU cores; tiny, so no lock is needed. Every figure in
docs/families.md's quantized table comes from the JSON this writes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

GGUF_LEVELS = ("Q8_0", "Q4_K_M")
SHAPE = {"intermediate_size": 768, "num_layers": 4, "num_kv_heads": 1}
TIED = {"gemma2"}  # llama.cpp's gemma2 graph has no output tensor: exported tied
STEPS = 60  # AdamW steps at lr 3e-3, 8 × 64 tokens each (the tests' trained fixture)


def trained_tiny(model_type: str, tokenizer, folder: Path, steps: int = STEPS) -> Path:
    """A tiny model of ``model_type`` after ``steps`` next-token steps on the built-in corpus."""
    from edgekit.models import TinySpec, peak_tiny_model, save_model, tiny_model

    extra = 64 if model_type == "qwen2" else 0  # transformers 5 reloads it as Qwen2Tokenizer (+1 token)
    spec = TinySpec(arch=model_type, vocab_size=len(tokenizer) + extra, tie_word_embeddings=model_type in TIED, **SHAPE)
    model = tiny_model(spec)
    model.config.bos_token_id, model.config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    if steps:
        peak_tiny_model(model, tokenizer, steps)
    return save_model(model.eval(), tokenizer, folder)


def _verify(artifact: Path, source: Path, level: str) -> dict:
    from edgekit.export.verify import verify_artifact

    report = verify_artifact(artifact, source, level=level, max_tokens=512)
    return {
        "mean_kl": report.mean_kl,
        "top1": report.top1,
        "max_mean_kl": report.max_mean_kl,
        "min_top1": report.min_top1,
        "tokenizer_parity": report.tokenizer_parity,
        "passed": report.passed,
        "bytes": _size(artifact),
    }


def _size(artifact: Path) -> int:
    if artifact.is_file():
        return artifact.stat().st_size
    return sum(p.stat().st_size for p in artifact.iterdir() if ".onnx" in p.name)


def _attempt(fn) -> dict:
    try:
        return fn()
    except Exception as exc:  # a bench records what each family does, failures included
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}


def measure_family(model_type: str, tokenizer, work: Path) -> dict:
    from edgekit.export.gguf import export_gguf
    from edgekit.export.onnx import export_onnx
    from edgekit.export.onnx_genai import unsupported_reason
    from edgekit.models import load_config

    row: dict = {}
    started = time.perf_counter()
    raw = trained_tiny(model_type, tokenizer, work / "random" / "model", steps=0)
    path = _attempt(lambda: {"path": export_gguf(raw, work / "random-gguf", ["Q8_0"], progress=False)[0]})
    row["Q8_0 (untrained)"] = _attempt(lambda: _verify(path["path"], raw, "Q8_0")) if "path" in path else path
    source = trained_tiny(model_type, tokenizer, work / "trained" / "model")
    files = _attempt(
        lambda: dict(
            zip(GGUF_LEVELS, export_gguf(source, work / "gguf", list(GGUF_LEVELS), progress=False), strict=True)
        )
    )
    for level in GGUF_LEVELS:
        row[level] = _attempt(lambda level=level: _verify(files[level], source, level)) if level in files else files
    reason = unsupported_reason(load_config(source))
    if reason:
        row["int4"] = {"refused": reason}
    else:
        row["int4"] = _attempt(
            lambda: _verify(export_onnx(source, work / "onnx", ["int4"], progress=False)[0], source, "int4")
        )
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    from edgekit.arch import REGISTRY
    from edgekit.data import builtin_documents
    from edgekit.tokenizer import train_byte_level_bpe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(sorted(REGISTRY)))
    parser.add_argument("--out", default=str(Path(__file__).with_name("results-families-quant.json")))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    tokenizer = train_byte_level_bpe(builtin_documents()[:400], vocab_size=512)
    results: dict = {}
    record = {
        "what": "tiny model per family (hidden 256, 4 layers, 4:1 heads, FFN 768, vocab 512), trained "
        f"{STEPS} steps; verify_artifact over 512 tokens with each level's default thresholds",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + ", 2 CPU cores (shared)",
        "tied": sorted(TIED),
        "families": results,
    }
    with tempfile.TemporaryDirectory(prefix="bench-families-quant-") as tmp:
        for model_type in args.families.split(","):
            results[model_type] = measure_family(model_type, tokenizer, Path(tmp) / model_type)
            print(model_type, json.dumps(results[model_type]), file=sys.stderr, flush=True)
            Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")  # after each family
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
