"""Run onnxruntime-genai's model builder with transformers 5's Gemma 3 config made flat (child process).

transformers 5 keeps Gemma 3's RoPE parameters per attention type
(``rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}``); onnxruntime-genai
0.18's builder reads ``rope_parameters["rope_type"]`` flat and stops with ``KeyError: 'rope_type'``.
Before its Gemma 3 exporter starts, this gives it the layout it reads: the full-attention
parameters flat, and the sliding layers' base as ``rope_local_base_freq`` (transformers 4's key).
Nothing else changes; a config that is already flat passes untouched. Measured: a tiny Gemma 3
exports with fp32 mean KL 4.9e-13 and 100 % top-1 vs PyTorch (``tests/test_onnx_families.py``).

Run as a script (``python onnx_builder_child.py <builder arguments>``), so it needs no edgekit import.
"""

from __future__ import annotations

import os
import runpy
import sys


def _flatten_rope(config) -> None:
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and "full_attention" in params:
        full, local = params["full_attention"], params.get("sliding_attention") or params["full_attention"]
        config.rope_parameters = dict(full)
        config.rope_theta = full["rope_theta"]
        config.rope_local_base_freq = local["rope_theta"]


def main() -> None:
    # run as a script, this folder is sys.path[0], and its onnx.py would shadow the onnx package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    import onnxruntime_genai.models as models

    # builder.py imports its exporters as top-level ``builders`` from its own folder: patch that module
    sys.path.insert(0, os.path.dirname(models.__file__))
    from builders import gemma

    original = gemma.Gemma3Model.__init__

    def init(self, config, *args, **kwargs):
        _flatten_rope(config)
        original(self, config, *args, **kwargs)

    gemma.Gemma3Model.__init__ = init
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")


if __name__ == "__main__":
    main()
