"""Quality per byte: edgekit's sensitivity-aware GGUF mixes against llama.cpp's own, at equal size.

Run:  python bench/bench_quant_alloc.py [--models demo,qwen2-384,mistral-512] [--out FILE.json]
      [--work DIR] [--tokens 4096] [--bpw 3.5,4,4.5,5,5.5,6] [--llama-cpp DIR]

For each model:
- llama.cpp default: llama.cpp's own converter (``convert_hf_to_gguf.py`` from the llama.cpp tree
  given by ``--llama-cpp``, run with its gguf-py) to F32, then its quantizer at each preset, no
  importance matrix. If the converter is not given or fails, edgekit's F32 writer stands in (the
  JSON says which) — the quantizer and its preset mixes are llama.cpp's either way.
- edgekit preset: llama.cpp's preset mix on edgekit's F32 file, with edgekit's importance matrix.
- edgekit allocated: ``export_gguf(allocate="auto")`` — types chosen per tensor within the
  preset's size (Q4_K_M-sized, Q5_K_M-sized) and at each ``--bpw`` target.
Every file is measured by ``verify_artifact`` (llama.cpp runtime vs PyTorch fp32, held-out split of
the built-in corpus): mean KL, top-1; the frontier is mean KL against bits per weight (tensor data
bytes x 8 / weights of the quantized tensors), written as a table and an SVG beside the JSON.
Models other than the demo teacher are trained here for ``--steps`` steps on the built-in corpus
(like tests/conftest.py's ``trained_tiny_dir``), one with a hidden width that is not a multiple of
256, and cached in the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgekit.export.gguf import export_gguf
from edgekit.export.quantize import quantize_gguf
from edgekit.export.verify import verify_artifact

PRESETS = ("Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
HEADLINE = ("Q4_K_M", "Q5_K_M")
# name -> (family, tokenizer, hidden, intermediate, layers, heads, kv heads, tied)
MODELS = {
    "qwen2-384": ("qwen2", "bpe", 384, 1024, 3, 6, 2, True),
    "mistral-512": ("mistral", "sp", 512, 1536, 2, 8, 4, False),
}


def trained_model(name: str, work: Path, steps: int) -> Path:
    """A small model of ``MODELS[name]`` trained briefly on the built-in corpus (cached in ``work``)."""
    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents
    from edgekit.models import TinySpec, save_model, tiny_model
    from edgekit.tokenizer import train_byte_level_bpe, train_sentencepiece_bpe

    folder = work / "models" / f"{name}-{steps}"
    if (folder / "config.json").is_file():
        return folder
    family, tok_kind, hidden, inter, layers, heads, kv, tied = MODELS[name]
    docs = builtin_documents()
    train = train_byte_level_bpe if tok_kind == "bpe" else train_sentencepiece_bpe
    tok = train(docs[:2000], vocab_size=2048)
    vocab = (len(tok) + 64) // 64 * 64  # rows to spare, as real models round up (saving may add a token)
    spec = TinySpec(family, vocab, hidden, inter, layers, heads, kv, 512, tied)
    model = tiny_model(spec)
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    train_docs, _ = split_documents(docs)
    rows = pack(tokenize_documents(tok, train_docs), 128, 4096)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = rows[(step * 8) % (len(rows) - 8) :][:8]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return save_model(model, tok, folder)


# llama.cpp's converter, with one change: its check that a BPE pre-tokenizer is one it knows by the
# hash of a sample's token ids. The models here train their own tokenizers (GPT-2 split regex), which
# no table lists; the tokenizer metadata does not touch the weights, and KL is measured on token ids.
_CONVERT = """
import runpy, sys
tree = sys.argv.pop(1)
sys.path.insert(0, tree)
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"
base.TextModel.get_vocab_base_pre = pre
sys.argv[0] = tree + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def llama_cpp_f32(folder: Path, out: Path, llama_cpp: Path | None) -> tuple[Path, str]:
    """F32 GGUF from llama.cpp's converter when it runs, else edgekit's writer; (path, which)."""
    if llama_cpp and (llama_cpp / "convert_hf_to_gguf.py").is_file():
        paths = [str(llama_cpp / "gguf-py"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # its own gguf-py first
        cmd = [sys.executable, "-c", _CONVERT, str(llama_cpp), str(folder), "--outtype", "f32", "--outfile", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode == 0 and _vocab_fits(out):
            return out, "llama.cpp convert_hf_to_gguf.py (unknown BPE pre-tokenizer hash taken as gpt-2)"
        why = done.stderr.strip().splitlines()[-1:] if done.returncode else "fewer tokens than embedding rows"
        print(f"llama.cpp's converter failed on {folder.name}: {why}", flush=True)
    (path,) = export_gguf(folder, out.parent, ["F32"], name=out.stem.removesuffix("-F32"), progress=False)
    return path, "edgekit writer (llama.cpp's converter unavailable)"


def _vocab_fits(path: Path) -> bool:
    """llama.cpp loads a file only if it lists a token per embedding row; its converter does not pad
    a SentencePiece-style vocabulary to a rounded-up embedding, so such a file cannot be used."""
    import gguf

    reader = gguf.GGUFReader(path)
    rows = next(int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight")
    return len(reader.fields["tokenizer.ggml.tokens"].data) == rows


def quantized_bits(path: Path) -> tuple[int, int]:
    """(tensor data bytes, weights) over the 2-D tensors llama.cpp quantizes."""
    import gguf

    tensors = [t for t in gguf.GGUFReader(path).tensors if len(t.shape) >= 2 and t.name != "rope_freqs.weight"]
    return sum(int(t.n_bytes) for t in tensors), sum(int(t.n_elements) for t in tensors)


def measure(path: Path, folder: Path, tokens: int) -> dict:
    r = verify_artifact(path, folder, level="Q4_K_M", max_tokens=tokens, record=False)
    nbytes, weights = quantized_bits(path)
    return {
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "bpw": round(nbytes * 8 / weights, 4),
        "mean_kl": r.mean_kl,
        "top1": r.top1,
        "ppl_change": r.ppl_change,
    }


def bench_model(label: str, folder: Path, work: Path, tokens: int, bpws: list[float], llama_cpp) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"model": label, "rows": {}}

    def note(key: str, row: dict) -> None:
        out["rows"][key] = row
        print(label, key, row, flush=True)

    f32, out["llama_cpp_converter"] = llama_cpp_f32(folder, work / "llamacpp-F32.gguf", llama_cpp)
    for level in PRESETS:
        path = quantize_gguf(f32, work / f"llamacpp-{level}.gguf", level)
        note(f"llama.cpp {level}", measure(path, folder, tokens))
    presets = export_gguf(folder, work / "preset", list(HEADLINE), progress=False)
    for level, path in zip(HEADLINE, presets, strict=True):
        note(f"edgekit preset {level} (imatrix)", measure(path, folder, tokens))
    from edgekit.export.mix import smallest_bpw

    out["smallest_bpw"] = floor = smallest_bpw(f32)
    bpws = [b for b in bpws if b >= floor]  # widths K-quants cannot hold set a floor (4.5 bits there)
    started = time.perf_counter()
    paths = export_gguf(folder, work / "alloc", list(HEADLINE), allocate="auto", bpw=bpws, progress=False)
    out["allocate_seconds"] = round(time.perf_counter() - started, 1)
    labels = [*HEADLINE, *(f"{b:g}bpw" for b in bpws)]
    for key, path in zip(labels, paths, strict=True):
        from edgekit.export.sidecar import read_sidecar

        alloc = read_sidecar(path)["allocation"]
        row = measure(path, folder, tokens)
        row |= {k: alloc.get(k) for k in ("method", "estimated_kl", "measured_kl", "kept_llama_cpp_mix")}
        row["tensors_without_imatrix"] = len(alloc["types"]) - len(alloc["imatrix_tensors"])
        row["types"] = _type_counts(alloc["types"])
        note(f"edgekit allocated {key}", row)
    out["ratios"] = {
        level: {
            "kl_ratio": out["rows"][f"edgekit allocated {level}"]["mean_kl"]
            / out["rows"][f"llama.cpp {level}"]["mean_kl"],
            "size_ratio": out["rows"][f"edgekit allocated {level}"]["file_bytes"]
            / out["rows"][f"llama.cpp {level}"]["file_bytes"],
        }
        for level in HEADLINE
    }
    print(label, "ratios", out["ratios"], flush=True)
    return out


def imatrix_study(folder: Path, work: Path, ggml_type: str = "Q4_K") -> dict:
    """Measured KL per tensor at ``ggml_type`` with and without the importance matrix, summed by role.

    One tensor quantized at a time (the rest fp), measured (forward passes on 1024 calibration
    tokens), so each sum says where the matrix helps and where it hurts.
    """
    import re

    from edgekit.data import training_set
    from edgekit.export.gguf import _imatrix_for
    from edgekit.export.sensitivity import probe
    from edgekit.models import load_model, load_tokenizer

    (base,) = export_gguf(folder, work / "study", ["F32"], name="study", progress=False)
    model, tokenizer = load_model(folder), load_tokenizer(folder)
    rows = training_set(tokenizer, seq_len=256, max_sequences=16)
    imx, _ = _imatrix_for(model, tokenizer, "auto", rows, "study")
    result = probe(model, base, rows, imatrix=imx, types=(ggml_type,), method="measure", workdir=work / "study")
    roles: dict[str, dict[str, float]] = {}
    for name, opts in result.options.items():
        kl = {o.imatrix: o.kl for o in opts if o.ggml_type == ggml_type}
        if len(kl) < 2:
            continue
        role = re.sub(r"^blk\.\d+\.", "", name).removesuffix(".weight")
        entry = roles.setdefault(role, {"plain": 0.0, "imatrix": 0.0, "tensors": 0, "imatrix_worse": 0})
        entry["plain"] += kl[False]
        entry["imatrix"] += kl[True]
        entry["tensors"] += 1
        entry["imatrix_worse"] += int(kl[True] > kl[False])
    print("imatrix study", json.dumps(roles, indent=1), flush=True)
    return roles


def _type_counts(types: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def svg(results: list[dict], path: Path) -> None:
    """KL (log scale) against bits per weight: llama.cpp presets and edgekit allocations, per model."""
    import math

    w, h, pad = 720, 240 * len(results), 50
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">'
    ]
    for i, res in enumerate(results):
        rows = res["rows"]
        pts = {
            "llama.cpp": [(r["bpw"], r["mean_kl"]) for k, r in rows.items() if k.startswith("llama.cpp")],
            "edgekit": [(r["bpw"], r["mean_kl"]) for k, r in rows.items() if k.startswith("edgekit allocated")],
        }
        allp = [p for v in pts.values() for p in v if p[1] > 0]
        x0, x1 = min(p[0] for p in allp) - 0.2, max(p[0] for p in allp) + 0.2
        y0, y1 = math.log10(min(p[1] for p in allp)) - 0.1, math.log10(max(p[1] for p in allp)) + 0.1
        top = i * 240

        def xy(b, kl, x0=x0, x1=x1, y0=y0, y1=y1, top=top):
            return pad + (b - x0) / (x1 - x0) * (w - 2 * pad), top + 20 + (y1 - math.log10(kl)) / (y1 - y0) * 180

        parts.append(f'<text x="{pad}" y="{top + 14}">{res["model"]}: mean KL (log) vs bits per weight</text>')
        for name, color in (("llama.cpp", "#c0392b"), ("edgekit", "#2471a3")):
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(b, k) for b, k in sorted(pts[name]) if k > 0))
            parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
            for b, k in pts[name]:
                x, y = xy(b, k)
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                    f"<title>{b} bpw, KL {k:.3g}</title></circle>"
                )
            parts.append(
                f'<text x="{w - 130}" y="{top + (30 if name == "edgekit" else 44)}" fill="{color}">{name}</text>'
            )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,qwen2-384,mistral-512")
    parser.add_argument("--out", type=Path, default=Path("bench-quant-alloc.json"))
    parser.add_argument("--work", type=Path, default=None, help="keep models and files here (default: temp dir)")
    parser.add_argument("--tokens", type=int, default=4096, help="held-out tokens compared per file")
    parser.add_argument("--bpw", default="3.5,4,4.5,5,5.5,6")
    parser.add_argument("--steps", type=int, default=80, help="training steps of the non-demo models")
    parser.add_argument("--llama-cpp", type=Path, default=None, help="llama.cpp source tree (its converter)")
    parser.add_argument("--imatrix-study", action="store_true", help="only: per-role KL with / without imatrix")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    bpws = [float(b) for b in args.bpw.split(",") if b]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quant-alloc."))
    results = []
    for name in args.models.split(","):
        if name == "demo":
            from edgekit.demo import demo_teacher

            folder = demo_teacher(progress=False)
        else:
            folder = trained_model(name, work, args.steps)
        if args.imatrix_study:
            results.append({"model": name, "imatrix_study_q4_k": imatrix_study(folder, work / name)})
            continue
        results.append(bench_model(name, folder, work / name, args.tokens, bpws, args.llama_cpp))
    doc = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}}
    doc["models"] = results
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.imatrix_study:
        return
    svg(results, args.out.with_suffix(".svg"))
    for res in results:
        print(res["model"], {k: round(v["kl_ratio"], 3) for k, v in res["ratios"].items()})


if __name__ == "__main__":
    main()
