"""GGUF writer + quantization: edgekit's export beside llama.cpp's own route, wall time and peak RSS.

Issue 23's target, on a Llama-3.2-1B-shaped model (``bench/sized_models.py``): writing the GGUF and
quantizing it to Q4_K_M (no importance matrix, no allocation, no verification) within 1.5× the
bf16 model's size in peak RSS and 1.5× llama.cpp's wall time. llama.cpp's route is its converter
(``convert_hf_to_gguf.py`` from the llama-cpp-python sdist, ``--outtype bf16``, run with this Python)
followed by its quantizer (``edgekit.export.quantize.quantize_gguf``, llama.cpp's C API, in a child).

Every route runs as a child process; peak RSS is the sum over its process tree, sampled every 0.1 s
(``bench/rss.py``). Run it alone, under the heavy-job lock:

    flock /tmp/edgekit-heavy.lock python bench/bench_gguf_writer.py /work/models/llama-1b \\
        --sdist /tmp/stream-writer/sdist --work /tmp/stream-writer/bench

``edgekit_route`` and ``llamacpp_route`` are importable (the size benchmark runs them per model size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import run_measured  # bench/ is not a package: imported from its folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-gguf-writer.json"
SDIST = "llama_cpp_python-0.3.36"  # the llama-cpp-python edgekit runs: its converter matches its quantizer
CONVERT = f"{SDIST}/vendor/llama.cpp/convert_hf_to_gguf.py"
GB = 1e9


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], log: Path) -> dict:
    """Run one command (stdout and stderr to ``log``); its rc, wall time (s) and tree peak RSS (bytes)."""
    with open(log, "wb") as fh:
        m = run_measured(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
    if m.rc != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (rc {m.rc}); log {log}:\n{tail}")
    return {"wall_s": round(m.wall_s, 2), "peak_rss_bytes": m.peak_rss_bytes, "root_hwm_bytes": m.root_hwm_bytes}


def edgekit_route(model_dir: Path, work: Path, quant: str = "Q4_K_M") -> dict:
    """``edgekit export --quant <quant>`` without imatrix, allocation or verification: one child process."""
    out = work / "edgekit"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "edgekit", "export", str(model_dir), "--quant", quant, "--out", str(out)]
    cmd += ["--imatrix", "none", "--allocate", "none", "--no-verify"]
    result = _run(cmd, work / "edgekit.log")
    (path,) = out.glob(f"*-{quant}.gguf")
    return {"route": f"edgekit export {quant}", **result, "file_bytes": path.stat().st_size, "file": str(path)}


def convert_script(sdist_dir: Path) -> Path:
    """llama.cpp's converter from the llama-cpp-python sdist in ``sdist_dir`` (extracted once, beside it)."""
    script = sdist_dir / CONVERT
    if not script.is_file():
        archive = sdist_dir / f"{SDIST}.tar.gz"
        if not archive.is_file():
            raise SystemExit(
                f"{archive} not found: pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36 -d {sdist_dir}"
            )
        prefix = f"{SDIST}/vendor/llama.cpp/"
        with tarfile.open(archive) as tar:
            wanted = [
                m
                for m in tar.getmembers()
                if m.name == CONVERT or m.name.startswith((prefix + "gguf-py/", prefix + "conversion/"))
            ]
            tar.extractall(sdist_dir, members=wanted, filter="data")
    return script


def llamacpp_route(model_dir: Path, work: Path, sdist_dir: Path, quant: str = "Q4_K_M") -> dict:
    """llama.cpp's converter to BF16, then its quantizer: two child processes, run one after the other."""
    bf16, out = work / "llamacpp-BF16.gguf", work / f"llamacpp-{quant}.gguf"
    for path in (bf16, out):
        path.unlink(missing_ok=True)
    convert = [sys.executable, str(convert_script(sdist_dir)), str(model_dir), "--outtype", "bf16"]
    first = _run([*convert, "--outfile", str(bf16)], work / "llamacpp-convert.log")
    code = (
        "import sys; from pathlib import Path; from edgekit.export.quantize import quantize_gguf; "
        "quantize_gguf(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])"
    )
    second = _run([sys.executable, "-c", code, str(bf16), str(out), quant], work / "llamacpp-quantize.log")
    bf16.unlink()
    return {
        "route": f"llama.cpp convert_hf_to_gguf --outtype bf16 + quantize {quant}",
        "wall_s": round(first["wall_s"] + second["wall_s"], 2),
        "peak_rss_bytes": max(first["peak_rss_bytes"], second["peak_rss_bytes"]),
        "stages": {"convert": first, "quantize": second},
        "file_bytes": out.stat().st_size,
        "file": str(out),
    }


def model_bytes(model_dir: Path) -> int:
    """Bytes of the checkpoint's safetensors files (the bf16 model size the targets are stated against)."""
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="HF folder (bf16 safetensors), e.g. /work/models/llama-1b")
    parser.add_argument("--sdist", type=Path, required=True, help="folder holding the llama-cpp-python sdist")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the files written")
    parser.add_argument("--quant", default="Q4_K_M")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    size = model_bytes(args.model)
    load_before = os.getloadavg()[0]
    writer = edgekit_route(args.model, args.work, "BF16")  # the writer alone: the file llama.cpp's converter makes
    writer["route"] = "edgekit export BF16 (writer only)"
    ours = edgekit_route(args.model, args.work, args.quant)
    theirs = llamacpp_route(args.model, args.work, args.sdist, args.quant)
    result = {
        "model": args.model.name,
        "model_bytes": size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_mem_gib():.0f} GiB RAM",
        # other sessions share the cores: the 1-minute load average before and after, for context
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "routes": [ours, theirs, writer],
        "edgekit_rss_over_model": round(ours["peak_rss_bytes"] / size, 3),
        "edgekit_wall_over_llamacpp": round(ours["wall_s"] / theirs["wall_s"], 3),
        "file_bytes_difference": ours["file_bytes"] - theirs["file_bytes"],
        "targets": {"rss_over_model_max": 1.5, "wall_over_llamacpp_max": 1.5},
    }
    previous = json.loads(args.results.read_text()) if args.results.is_file() else {}
    previous[f"{args.model.name}-{args.quant}"] = result
    args.results.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")
    for r in result["routes"]:
        print(f"{r['route']}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_bytes'] / GB:.2f} GB, {r['file_bytes']} bytes")
    print(
        f"edgekit / model size: {result['edgekit_rss_over_model']}x RSS; "
        f"edgekit / llama.cpp: {result['edgekit_wall_over_llamacpp']}x wall"
    )
    return result


def _mem_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


if __name__ == "__main__":
    main()
