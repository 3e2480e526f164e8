"""Export the demo teacher at every GGUF and ONNX level and measure what each level costs in quality.

Run:  python bench/bench_export.py [--out bench-export.json] [--tokens 4096] [--work DIR] [--decompose]
For every level: file size (MiB), mean KL(PyTorch fp32 ‖ artifact) per token, top-1 agreement, and
held-out perplexity with its change, all measured by ``edgekit.export.verify.verify_artifact`` (the
same code as ``edgekit verify``) on the built-in corpus's held-out split, with the artifact running
in its own runtime (llama.cpp, ONNX Runtime). Q4_K_M and Q4_0 are also made without an importance
matrix, and Q4_K_M with the token-embedding table kept at Q8_0 (with and without), to show what the
matrix buys. The imatrix is computed once from the default calibration rows (16 x 256 tokens of the
training split) and reused from its saved file. ``--decompose`` adds where the error comes from:
one tensor group at a time quantized (the rest kept F32), with and without the matrix.
Timings are wall seconds on whatever machine runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from edgekit.demo import demo_teacher
from edgekit.export.gguf import export_gguf
from edgekit.export.onnx import export_onnx
from edgekit.export.verify import verify_artifact

GGUF_LEVELS = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
ONNX_LEVELS = ("fp32", "int8", "int4")
KEEP_EMBEDDING = {r"^token_embd\.weight$": "Q8_0"}
# name -> (level, use the imatrix, per-tensor overrides)
VARIANTS = {
    "Q4_K_M (no imatrix)": ("Q4_K_M", False, {}),
    "Q4_0 (no imatrix)": ("Q4_0", False, {}),
    "Q4_K_M, token_embd Q8_0": ("Q4_K_M", True, KEEP_EMBEDDING),
    "Q4_K_M, token_embd Q8_0 (no imatrix)": ("Q4_K_M", False, KEEP_EMBEDDING),
}
# tensor group -> regex on GGUF names, for --decompose
GROUPS = {
    "token_embd": r"^token_embd\.",
    "output": r"^output\.weight$",
    "attention": r"attn_(q|k|v|output)\.",
    "feed-forward": r"ffn_(gate|up|down)\.",
}


def size_mib(artifact: Path) -> float:
    """Bytes of a file, or of an ONNX folder's model files (tokenizer and JSON excluded), in MiB."""
    files = [artifact] if artifact.is_file() else [p for p in artifact.iterdir() if p.name.startswith("model.onnx")]
    return round(sum(p.stat().st_size for p in files) / 2**20, 3)


def measure(artifact: Path, reference: Path, level: str, tokens: int) -> dict:
    started = time.perf_counter()
    r = verify_artifact(artifact, reference, level=level, max_tokens=tokens, record=False)
    return {
        "file": artifact.name,
        "size_mib": size_mib(artifact),
        "mean_kl": r.mean_kl,
        "max_kl": r.max_kl,
        "top1": r.top1,
        "ppl_reference": round(r.ppl_reference, 3),
        "ppl": round(r.ppl_artifact, 3),
        "ppl_change": r.ppl_change,
        "tokens": r.tokens,
        "tokenizer_parity": r.tokenizer_parity,
        "passed_default_gate": r.passed,
        "verify_seconds": round(time.perf_counter() - started, 1),
    }


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - started, 1)


def run(work: Path, tokens: int, decompose: bool) -> dict:
    folder = demo_teacher(progress=False)
    results: dict = {"model": folder.name, "heldout_tokens": tokens, "machine": machine(), "levels": {}}
    paths, results["gguf_export_seconds"] = timed(
        export_gguf, folder, work / "gguf", list(GGUF_LEVELS), name="demo", progress=False
    )
    for level, path in zip(GGUF_LEVELS, paths, strict=True):
        report(results, f"gguf {level}", measure(path, folder, level, tokens))
    saved = work / "gguf" / "demo-imatrix.safetensors"
    for i, (label, (level, use, overrides)) in enumerate(VARIANTS.items()):
        (path,) = export_gguf(
            folder,
            work / "gguf",
            [level],
            name=f"variant{i}",
            imatrix=saved if use else None,
            type_overrides=overrides,
            progress=False,
        )
        report(results, f"gguf {label}", measure(path, folder, level, tokens))
    folders, results["onnx_export_seconds"] = timed(
        export_onnx, folder, work / "onnx", list(ONNX_LEVELS), progress=False
    )
    for level, path in zip(ONNX_LEVELS, folders, strict=True):
        report(results, f"onnx {level}", measure(path, folder, level, tokens))
    if decompose:
        results["decompose"] = decomposition(folder, work / "decompose", saved, tokens)
    return results


def report(results: dict, label: str, row: dict) -> None:
    results["levels"][label] = row
    print(label, row, flush=True)


def decomposition(folder: Path, work: Path, saved: Path, tokens: int) -> dict:
    """Mean KL with one tensor group quantized to a GGML type (the rest F32), with and without the imatrix."""
    out = {}
    for group, pattern in GROUPS.items():
        for ggml_type in ("Q4_K", "Q2_K"):
            overrides = {p: "F32" for g, p in GROUPS.items() if g != group} | {pattern: ggml_type}
            for use in (True, False):
                (path,) = export_gguf(
                    folder,
                    work,
                    ["Q4_K_M"],
                    name="part",
                    imatrix=saved if use else None,
                    type_overrides=overrides,
                    progress=False,
                )
                r = verify_artifact(path, folder, level="Q4_K_M", max_tokens=tokens, record=False)
                key = f"{group} {ggml_type} {'imatrix' if use else 'no imatrix'}"
                out[key] = {"mean_kl": r.mean_kl, "top1": r.top1}
                print(key, out[key], flush=True)
    return out


def machine() -> dict:
    import llama_cpp
    import onnxruntime

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "llama_cpp_python": llama_cpp.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-export.json"))
    parser.add_argument("--tokens", type=int, default=4096, help="held-out tokens compared per level")
    parser.add_argument("--work", type=Path, default=None, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--decompose", action="store_true", help="also: KL per quantized tensor group")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.work:
        results = run(args.work, args.tokens, args.decompose)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-export.") as work:
            results = run(Path(work), args.tokens, args.decompose)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
