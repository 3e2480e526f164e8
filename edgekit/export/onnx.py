"""ONNX export: one entry point, two routes.

- ``genai`` (default): onnxruntime-genai's model builder writes an ONNX Runtime GenAI package per
  level (``edgekit.export.onnx_genai``); apps load it with ``onnxruntime_genai.Model(folder)``.
- ``optimum``: optimum-onnx's exporter plus ONNX Runtime quantizers (``edgekit.export.onnx_optimum``),
  behind the ``edgekit[optimum]`` extra because optimum-onnx caps transformers below 5.

Either way the output is ``out_dir/onnx-<level>/`` with an ``edgekit-artifact.json`` sidecar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgekit.errors import ConfigError, Problem
from edgekit.export.onnx_genai import LEVELS as GENAI_LEVELS
from edgekit.export.onnx_genai import BuilderOptions

ROUTES = ("genai", "optimum")
OPTIMUM_LEVELS = ("fp32", "int8", "int4")  # fp16 needs a CUDA export device there; not offered
SUPPORTED_QUANTS = tuple(GENAI_LEVELS)


def folder_name(quant: str) -> str:
    """Name of the output folder of one level, e.g. ``onnx-int4``."""
    return f"onnx-{quant}"


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    quants: Sequence[str] = ("fp32",),
    *,
    route: str = "genai",
    options: BuilderOptions | None = None,
    block_size: int | None = None,
    opset: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Export a HF folder to one ONNX folder per level; returns those folders in the order of ``quants``.

    ``options`` (genai route): execution provider, int4 algorithm, accuracy level; ``block_size``
    (weights per scale) overrides theirs. ``opset`` applies to the optimum route only.
    """
    if route not in ROUTES:
        raise ConfigError([Problem("export", "onnx route", f"{route!r}; choose from {', '.join(ROUTES)}")])
    if route == "optimum":
        from edgekit.export.onnx_optimum import export_onnx_optimum

        return export_onnx_optimum(
            model_dir, out_dir, quants, block_size=block_size or 32, opset=opset, progress=progress
        )
    from dataclasses import replace

    from edgekit.export.onnx_genai import export_onnx_genai

    options = options or BuilderOptions()
    if block_size is not None:
        options = replace(options, block_size=block_size)
    return export_onnx_genai(model_dir, out_dir, quants, options, progress=progress)
