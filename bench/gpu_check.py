"""One prepared GPU check of edgekit's CUDA paths, every figure into one JSON.

    python bench/gpu_check.py --out gpu-check.json            # on one CUDA GPU, sized for < 8 minutes
    python bench/gpu_check.py --dry-run --out /tmp/check.json # the same code path on the CPU, tiny shapes

Sections (each records ``status``: ok | skipped (with ``reason``) | error (one line), so one broken
path does not hide the others' figures):

- ``pytest_gpu``: ``pytest -m gpu`` (every CUDA-only test): passed / failed / skipped counts;
- ``distill``: a teacher of a published ~0.5 B shape (Qwen2.5-0.5B's config, its real 151,936-token
  vocabulary, random weights) and its derived half-depth student, distilled in bf16 autocast:
  tokens/s and peak GPU memory (MiB, ``torch.cuda.max_memory_allocated``), naive and fused loss;
- ``fused_memory``: the KD loss alone, forward + backward, at 8,192 tokens x 150,000 vocabulary:
  peak GPU memory above its inputs, naive vs fused, and their ratio;
- ``loss_curve``: 50 steps of one run (the same config truncated to 4 layers) on CUDA in bf16 and on
  the CPU in fp32, same seed: both curves and their largest relative difference;
- ``importance``: activation and Taylor pruning importance of the teacher, seconds;
- ``onnx``: export the truncated model through the ONNX route of the day and decode through
  ``edgekit.load`` on the CUDA execution provider: decode tokens/s, GPU memory, KL against PyTorch
  (skipped, with the reason, when the route or the CUDA provider is unavailable);
- ``harness_memory``: the benchmark harness's GPU memory reading (``GpuPeak``: NVML or nvidia-smi)
  against ``torch.cuda.max_memory_allocated`` for one model load and forward.

``--dry-run`` runs every section on the CPU with tiny shapes in well under a minute (CI runs it
through tests/test_gpu_check.py): its figures are CPU figures and say so (``device: cpu``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # published_configs.py: real model shapes, no download

# Sizes of each run. "full" fits one data-centre GPU in under 8 minutes; "dry" runs on a CPU in seconds.
SHAPES: dict[str, dict[str, Any]] = {
    "full": {
        "distill": {"batch": 4, "seq": 512, "steps": 12},
        "memory": {"tokens": 8192, "vocab": 150_000, "hidden": 896, "chunk": 1024},
        "curve": {"layers": 4, "batch": 2, "seq": 64, "steps": 50},
        "importance": {"rows": 8, "seq": 256},
        "onnx": {"new_tokens": 64},
        "pytest_paths": ["tests"],
    },
    "dry": {
        "distill": {"batch": 2, "seq": 16, "steps": 3},
        "memory": {"tokens": 64, "vocab": 500, "hidden": 16, "chunk": 16},
        "curve": {"layers": 2, "batch": 2, "seq": 16, "steps": 4},
        "importance": {"rows": 2, "seq": 16},
        "onnx": {"new_tokens": 4},
        "pytest_paths": ["tests/test_distill_trainer.py"],  # two gpu tests, skipped on a CPU
    },
}
TINY_TEACHER = {  # the dry run's stand-in for the published config: same family, tiny
    "model_type": "qwen2",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 600,
    "tie_word_embeddings": True,
}


class Skip(Exception):
    """A section that cannot run here (no CUDA, route unavailable): recorded with its reason."""


def _section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        out = {"status": "ok", **fn()}
    except Skip as exc:
        out = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # one line per broken path; the traceback goes to stderr for the log
        traceback.print_exc()
        out = {"status": "error", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    out["seconds"] = round(time.perf_counter() - started, 2)
    print(f"[gpu_check] {name}: {out['status']} ({out['seconds']} s)", file=sys.stderr, flush=True)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def teacher_config(dry: bool, layers: int | None = None):
    """The published ~0.5 B config (real vocabulary), or the dry run's tiny one; ``layers`` truncates."""
    from published_configs import QWEN_25_05B, hf_config

    published = dict(TINY_TEACHER if dry else QWEN_25_05B)
    if layers is not None:
        published["num_hidden_layers"] = layers
    return hf_config(published)


def random_model(config, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _rows(vocab: int, n: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def pytest_gpu(paths: list[str]) -> dict[str, Any]:
    """``pytest -m gpu`` over ``paths``: counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={xml}", *paths]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
        if not xml.is_file():
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {proc.stdout[-300:]}")
        suites = ET.parse(xml).getroot()
        suite = suites if suites.tag == "testsuite" else suites[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"exit_code": proc.returncode, **counts, "tail": proc.stdout.strip().splitlines()[-1:]}


def distill_speed(device: torch.device, dry: bool, shape: dict[str, int]) -> dict[str, Any]:
    """bf16 (CUDA) distillation of the published-shape teacher into its half-depth student, naive and fused."""
    from edgekit.distill import DistillConfig, derive_student, distill
    from edgekit.models import count_parameters

    teacher = random_model(teacher_config(dry))
    layers = max(1, teacher.config.num_hidden_layers // 2)
    rows = _rows(teacher.config.vocab_size, shape["batch"] * shape["steps"], shape["seq"])
    out: dict[str, Any] = {
        "teacher_parameters": count_parameters(teacher),
        "student_layers": layers,
        "vocab": teacher.config.vocab_size,
        "tokens_per_step": shape["batch"] * shape["seq"],
    }
    for fused in (False, True):
        student = derive_student(teacher, num_layers=layers)
        out.setdefault("student_parameters", count_parameters(student))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        config = DistillConfig(
            steps=shape["steps"], batch_size=shape["batch"], seq_len=shape["seq"], warmup_steps=1,
            checkpoint_every=10**9, alpha=0.5, temperature=2.0, fused=fused, device=device.type,
        )  # fmt: skip
        result = distill(teacher, student, rows, config, progress=False)
        speeds = [e["tokens_per_s"] for e in result.history[1:]] or [result.history[0]["tokens_per_s"]]
        out["fused" if fused else "naive"] = {
            "tokens_per_s": statistics.median(speeds),  # first step (allocator, kernels warming up) left out
            "peak_mib": _peak_mib(device),
            "final_loss": result.history[-1]["loss"],
        }
        teacher.cpu()
    return out


def fused_memory(device: torch.device, shape: dict[str, int]) -> dict[str, Any]:
    """Peak memory of the KD loss alone (forward + backward) above its inputs: naive vs fused."""
    from edgekit.distill.fused import fused_kd_loss
    from edgekit.distill.losses import soft_kl

    n, v, d = shape["tokens"], shape["vocab"], shape["hidden"]
    out: dict[str, Any] = {"tokens": n, "vocab": v, "hidden": d, "chunk": shape["chunk"]}
    for kind in ("naive", "fused"):
        g = torch.Generator(device=device).manual_seed(0)
        h = torch.randn(n, d, generator=g, device=device, requires_grad=True)
        w = (torch.randn(v, d, generator=g, device=device) * 0.05).requires_grad_(True)
        th, tw = torch.randn(n, d, generator=g, device=device), torch.randn(v, d, generator=g, device=device) * 0.05
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        if kind == "naive":
            loss = soft_kl(h @ w.t(), th @ tw.t(), 2.0)
        else:
            loss = fused_kd_loss(h, w, teacher_hidden=th, teacher_weight=tw, temperature=2.0, chunk=shape["chunk"])
        loss.backward()
        _sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
        out[kind] = {"peak_mib": peak, "loss": loss.item(), "seconds": time.perf_counter() - started}
        del h, w, th, tw, loss
    if out["naive"]["peak_mib"]:
        out["fused_over_naive"] = out["fused"]["peak_mib"] / out["naive"]["peak_mib"]
    out["loss_rel_diff"] = abs(out["fused"]["loss"] - out["naive"]["loss"]) / abs(out["naive"]["loss"])
    return out


def loss_curve(device: torch.device, dry: bool, shape: dict[str, int]) -> dict[str, Any]:
    """The same run (same seed) on ``device`` (bf16 on CUDA) and on the CPU in fp32: both loss curves."""
    from edgekit.distill import DistillConfig, derive_student, distill

    teacher = random_model(teacher_config(dry, shape["layers"]))
    rows = _rows(teacher.config.vocab_size, 16, shape["seq"], seed=1)
    curves = {}
    for where in (device.type, "cpu"):
        student = derive_student(teacher, num_layers=max(1, shape["layers"] // 2))
        config = DistillConfig(
            steps=shape["steps"], batch_size=shape["batch"], seq_len=shape["seq"], warmup_steps=5, lr=1e-3,
            checkpoint_every=10**9, alpha=0.5, temperature=2.0, device=where, seed=0,
        )  # fmt: skip
        curves[where] = [e["loss"] for e in distill(teacher, student, rows, config, progress=False).history]
        teacher.cpu()
    a, b = curves[device.type], curves["cpu"]
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True)]
    return {"device_curve": a, "cpu_fp32_curve": b, "max_rel_diff": max(rel), "final_rel_diff": rel[-1]}


def importance(device: torch.device, dry: bool, shape: dict[str, int]) -> dict[str, Any]:
    """Seconds of activation and Taylor importance of the teacher on ``device``."""
    from edgekit.prune.importance import activation_scores, taylor_scores

    model = random_model(teacher_config(dry)).to(device)
    calibration = _rows(model.config.vocab_size, shape["rows"], shape["seq"]).to(device)
    out: dict[str, Any] = {"rows": shape["rows"], "seq": shape["seq"]}
    for name, fn in (("activation", activation_scores), ("taylor", taylor_scores)):
        _sync(device)
        started = time.perf_counter()
        scores = fn(model, calibration)
        _sync(device)
        out[f"{name}_seconds"] = time.perf_counter() - started
        out[f"{name}_ffn_finite"] = bool(torch.isfinite(scores.ffn).all())
    model.cpu()
    return out


def _hf_folder(dry: bool, layers: int, folder: Path) -> Path:
    """A saved HF folder of the truncated config with a small trained tokenizer (ids < its vocabulary)."""
    from edgekit.data import builtin_documents
    from edgekit.models import save_model
    from edgekit.tokenizer import train_byte_level_bpe

    tok = train_byte_level_bpe(builtin_documents()[:60], vocab_size=300)
    model = random_model(teacher_config(dry, layers))
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    return save_model(model, tok, folder)


def onnx_decode(device: torch.device, dry: bool, curve_layers: int, shape: dict[str, int]) -> dict[str, Any]:
    """Export through the ONNX route of the day, decode through ``edgekit.load``; KL against PyTorch."""
    import numpy as np

    import edgekit
    from edgekit.bench.gpu import CUDA_PROVIDER, ort_has_cuda
    from edgekit.bench.memory import GpuPeak
    from edgekit.errors import EdgekitError
    from edgekit.models import load_model
    from edgekit.quality import kl_per_token

    if device.type == "cuda" and not ort_has_cuda():
        raise Skip("ONNX Runtime has no CUDA execution provider here (install onnxruntime-gpu)")
    try:
        from edgekit.export.onnx import export_onnx
    except ImportError as exc:
        raise Skip(f"no ONNX export route in this tree ({exc})") from None
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _hf_folder(dry, curve_layers, Path(tmp) / "hf")
        try:
            folder = export_onnx(model_dir, Path(tmp) / "onnx", progress=False)[0]
        except EdgekitError as exc:  # a missing exporter package, an unsupported route: say why and go on
            raise Skip(f"ONNX export unavailable: {exc}") from None
        peak = GpuPeak() if device.type == "cuda" else None
        options = {"provider": CUDA_PROVIDER} if device.type == "cuda" else {}
        with edgekit.load(folder, backend="onnxruntime", **options) as model:
            if peak:
                peak.sample()
            ids = model.tokenize("def main():\n    return sum(range(10))")
            started = time.perf_counter()
            new = model.generate_ids("def main():", max_tokens=shape["new_tokens"], ignore_eos=True)
            seconds = time.perf_counter() - started
            if peak:
                peak.sample()
            onnx_logits = np.asarray(model.backend.logits(ids), dtype=np.float32)
        with torch.no_grad():
            ref = load_model(model_dir)(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    return {
        "provider": options.get("provider", "CPUExecutionProvider"),
        "generated_tokens": len(new),
        "tokens_per_s": len(new) / seconds if seconds > 0 else None,  # prompt + decode, one call
        "gpu_memory_mib": peak.peak_bytes / 2**20 if peak and peak.available else None,
        "gpu_memory_method": peak.method if peak else None,
        "kl_vs_torch": float(kl_per_token(ref, onnx_logits).mean()),
    }


def harness_memory(device: torch.device, dry: bool) -> dict[str, Any]:
    """The harness's GPU reading (GpuPeak) vs torch's allocator and nvidia-smi, one load + forward."""
    if device.type != "cuda":
        raise Skip("no CUDA device: the harness reads GPU memory through NVML / nvidia-smi")
    from edgekit.bench.memory import GpuPeak, _nvidia_smi_bytes

    peak = GpuPeak()
    torch.cuda.reset_peak_memory_stats(device)
    model = random_model(teacher_config(dry)).to(device)
    with torch.no_grad():
        model(input_ids=_rows(model.config.vocab_size, 1, 512).to(device))
    _sync(device)
    peak.sample()
    smi = _nvidia_smi_bytes(os.getpid())
    out = {
        "harness_mib": peak.peak_bytes / 2**20 if peak.available else None,
        "harness_method": peak.method,
        "torch_max_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
        "torch_max_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        "nvidia_smi_mib": smi[0] / 2**20 if smi else None,
        "nvidia_smi_method": smi[1] if smi else None,
    }
    del model
    torch.cuda.empty_cache()
    return out


def run(dry: bool, only: list[str] | None = None) -> dict[str, Any]:
    """Every section (or ``only`` those named) on CUDA, or on the CPU with tiny shapes when ``dry``."""
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; use --dry-run to check the code path on the CPU")
    device = torch.device("cpu" if dry else "cuda")
    shapes = SHAPES["dry" if dry else "full"]
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "pytest_gpu": lambda: pytest_gpu(shapes["pytest_paths"]),
        "distill": lambda: distill_speed(device, dry, shapes["distill"]),
        "fused_memory": lambda: fused_memory(device, shapes["memory"]),
        "loss_curve": lambda: loss_curve(device, dry, shapes["curve"]),
        "importance": lambda: importance(device, dry, shapes["importance"]),
        "onnx": lambda: onnx_decode(device, dry, shapes["curve"]["layers"], shapes["onnx"]),
        "harness_memory": lambda: harness_memory(device, dry),
    }
    started = time.perf_counter()
    report: dict[str, Any] = {
        "dry_run": dry,
        "device": device.type,
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "shapes": copy.deepcopy(shapes),
        "sections": {},
    }
    for name, fn in sections.items():
        if only is None or name in only:
            report["sections"][name] = _section(name, fn)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON written")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the code path in seconds")
    parser.add_argument("--only", nargs="+", help="run only these sections")
    args = parser.parse_args(argv)
    report = run(args.dry_run, args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps({k: v.get("status") for k, v in report["sections"].items()}))
    return report


if __name__ == "__main__":
    main()
