"""Hugging Face folder -> ONNX folders (fp32, dynamic int8, int4 weight-only) with a KV cache.

The fp32 graph comes from optimum's exporter (task ``text-generation-with-past``: inputs
``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.N.key/value``; outputs
``logits`` and ``present.N.key/value``). Quantized levels are derived from that one fp32 export with
ONNX Runtime's own quantizers (see ``edgekit.export.onnx_quant``), so a three-level export runs
the slow tracing step once.

Layout: ``out_dir/onnx-<level>/`` holding ``model.onnx`` (+ external data when large), the HF
``config.json``, ``generation_config.json``, tokenizer files and ``edgekit-artifact.json``.
Each folder appears only when complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from edgekit.errors import BackendUnavailable, ConfigError, Problem, StageError
from edgekit.export.checks import check_source
from edgekit.export.sidecar import write_sidecar
from edgekit.fileio import atomic_path, temporary_dir
from edgekit.formats import export_levels

ONNX_TASK = "text-generation-with-past"
MODEL_FILE = "model.onnx"
SUPPORTED_QUANTS = tuple(export_levels("onnx"))  # the one table (edgekit.formats)


def folder_name(quant: str) -> str:
    """Name of the output folder of one level, e.g. ``onnx-int4``."""
    return f"onnx-{quant}"


def _check_quants(quants: Sequence[str]) -> list[str]:
    wanted = [q.strip().lower() for q in quants if q.strip()]
    bad = [q for q in wanted if q not in SUPPORTED_QUANTS]
    if bad or not wanted:
        shown = ", ".join(bad) if bad else "(none)"
        raise ConfigError(
            [
                Problem(
                    "export", "quant", f"unsupported ONNX level(s) {shown}; choose from {', '.join(SUPPORTED_QUANTS)}"
                )
            ]
        )
    return list(dict.fromkeys(wanted))


def _check_block_size(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise ConfigError([Problem("export", "block_size", f"must be a power of two >= 16, got {block_size}")])


def _export_fp32(model_dir: Path, work: Path, opset: int | None, progress: bool) -> Path:
    """Run optimum's exporter into ``work``; returns the folder holding ``model.onnx``."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:  # pragma: no cover - optimum is a declared dependency
        raise BackendUnavailable(f"ONNX export needs optimum-onnx: pip install optimum-onnx ({exc})") from None
    import logging

    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.set_verbosity_error()
        logging.getLogger("optimum").setLevel(logging.ERROR)
    try:
        main_export(
            str(model_dir),
            output=work,
            task=ONNX_TASK,
            opset=opset,
            device="cpu",
            do_validation=False,  # edgekit verifies against PyTorch itself (tests, `edgekit verify`)
            local_files_only=True,
            trust_remote_code=False,
            library_name="transformers",
        )
    except Exception as exc:  # optimum raises many types; the user needs one line
        raise StageError("export-onnx", f"optimum could not export {model_dir}: {exc}") from exc
    if not (work / MODEL_FILE).is_file():
        raise StageError("export-onnx", f"optimum wrote no {MODEL_FILE} into {work}")
    return work


def _is_model_file(path: Path) -> bool:
    """The ONNX graph or its external-data files (``model.onnx``, ``model.onnx_data``, ``*.onnx.data``)."""
    return path.name.startswith("model.onnx") or path.suffix in (".onnx", ".onnx_data")


def _copy_side_files(src: Path, dst: Path) -> None:
    """Config, generation config and tokenizer files: everything except the ONNX graph and its data."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and not _is_model_file(path):
            shutil.copy2(path, dst / path.name)


def _copy_model(src: Path, dst: Path) -> None:
    """``model.onnx`` and any external-data files beside it."""
    for path in src.iterdir():
        if path.is_file() and _is_model_file(path):
            shutil.copy2(path, dst / path.name)


def _write_level(fp32_dir: Path, final: Path, quant: str, model_dir: Path, block_size: int, arch: str) -> Path:
    from edgekit.export.onnx_quant import quantize_int4, quantize_int8

    with atomic_path(final) as tmp:
        _copy_side_files(fp32_dir, tmp)
        if quant == "fp32":
            _copy_model(fp32_dir, tmp)
            extra: dict = {}
        elif quant == "int8":
            quantize_int8(fp32_dir / MODEL_FILE, tmp / MODEL_FILE)
            extra = {"int8": {"method": "dynamic", "per_channel": True, "op_types": ["MatMul"]}}
        else:
            quantize_int4(fp32_dir / MODEL_FILE, tmp / MODEL_FILE, block_size=block_size)
            extra = {"int4": {"method": "MatMulNBits", "block_size": block_size, "symmetric": False}}
        write_sidecar(
            tmp,
            format="onnx",
            quantization=quant,
            source_model=model_dir,
            extra={"architecture": arch, "task": ONNX_TASK, **extra},
        )
    return final


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    quants: Sequence[str] = ("fp32",),
    *,
    block_size: int = 32,
    opset: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Export a llama/mistral/qwen2 HF folder to one ONNX folder per level; returns those folders.

    ``quants``: any of "fp32", "int8" (dynamic, per-channel MatMul weights), "int4" (MatMulNBits,
    ``block_size`` weights per scale). All input is checked before anything is written.
    """
    model_dir = Path(model_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    levels = _check_quants(quants)
    _check_block_size(block_size)
    arch = check_source(model_dir).model_type
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with temporary_dir(out_dir, "onnx-export") as work:  # removed on failure and by the next run
        fp32_dir = _export_fp32(model_dir, Path(work) / "fp32", opset, progress)
        for quant in levels:
            written.append(_write_level(fp32_dir, out_dir / folder_name(quant), quant, model_dir, block_size, arch))
    return written
