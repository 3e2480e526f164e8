"""The embedding example in docs/runtime.md runs as written (on a tiny model instead of the demo teacher)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import edgekit.demo

DOC = Path(__file__).resolve().parents[1] / "docs" / "runtime.md"


def test_runtime_doc_example_runs_when_demo_teacher_is_replaced_by_tiny_model(tiny_llama_dir, monkeypatch, capsys):
    code = re.search(r"```python\n(import edgekit\n.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.setattr(edgekit.demo, "demo_teacher", lambda *a, **k: tiny_llama_dir)
    threads = torch.get_num_threads()
    try:
        exec(compile(code, str(DOC), "exec"), {})
    finally:
        torch.set_num_threads(threads)  # the example's target profile sets torch's process-wide threads
    out = capsys.readouterr().out
    assert out.startswith("torch fp32") and "tokens/s" in out
