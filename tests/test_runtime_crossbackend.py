"""One model, three engines: greedy output is identical on PyTorch, ONNX Runtime (fp32) and llama.cpp (F32).

Artifacts are made with the ``edgekit export`` command (the exporters' public interface). Each part
skips until its backend module is present in the tree (branches ``gguf`` and ``onnx``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["def main():\n    ", "The os module", "import sys\nfor line in sys.stdin:"]
BACKENDS = {"gguf": "edgekit.runtime.llamacpp", "onnx": "edgekit.runtime.onnxruntime"}
QUANT = {"gguf": "F32", "onnx": "fp32"}
TIE = 0.02  # logits closer than this are a tie (F32 llama.cpp vs PyTorch logits differ by up to ~5e-3 here)


def _needs(fmt: str) -> None:
    if importlib.util.find_spec(BACKENDS[fmt]) is None:
        pytest.skip(f"{BACKENDS[fmt]} is not in this tree yet (branch {fmt})")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def export(model_dir: Path, fmt: str, out: Path) -> Path:
    """Run ``edgekit export`` and return the GGUF file or the ONNX folder it wrote."""
    cmd = [sys.executable, "-m", "edgekit", "export", str(model_dir), "--format", fmt, "--quant", QUANT[fmt]]
    cmd += ["--no-verify", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if fmt == "gguf":
        return next(p for p in sorted(out.rglob("*.gguf")))
    return next(p.parent for p in sorted(out.rglob("*.onnx")))


@pytest.fixture(scope="module")
def tiny_artifacts(make_tiny_hf, tmp_path_factory) -> dict[str, Path]:
    """{"hf": folder, "gguf": file, "onnx": folder} of one tiny Llama, for the backends present."""
    model_dir = make_tiny_hf("llama", intermediate_size=768)  # no 512-wide MLP: the ONNX builder needs it != vocab
    out = {"hf": model_dir}
    for fmt in ("gguf", "onnx"):
        if importlib.util.find_spec(BACKENDS[fmt]) is not None:
            out[fmt] = export(model_dir, fmt, tmp_path_factory.mktemp(f"export-{fmt}"))
    return out


def _greedy(path: Path, prompts: list[str], max_tokens: int) -> list[list[int]]:
    with edgekit.load(path, n_threads=2) as model:
        return [model.generate_ids(p, max_tokens=max_tokens) for p in prompts]


def assert_same_greedy(reference: Path, prompts: list[str], expected: list[list[int]], got: list[list[int]]) -> None:
    """Greedy ids must be identical, except after a numerical tie: where the two first differ, the
    reference's logits for both choices must be within ``TIE`` of each other (float32 engines sum in
    different orders, so a near-tie may go either way)."""
    with edgekit.load(reference) as ref:
        for prompt, want, have in zip(prompts, expected, got, strict=True):
            if want == have:
                continue
            k = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), None)
            assert k is not None, f"{prompt!r}: one stopped early: {want} vs {have}"
            row = ref.backend.logits(ref.prompt_ids(prompt) + want[:k])[-1]
            gap = abs(float(row[want[k]] - row[have[k]]))
            assert gap < TIE, f"{prompt!r}: token {k} differs ({want[k]} vs {have[k]}) with logit gap {gap:.4f}"


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_greedy_ids_equal_pytorch_when_exported_at_full_precision(tiny_artifacts, fmt):
    _needs(fmt)
    reference = _greedy(tiny_artifacts["hf"], PROMPTS, 24)
    assert_same_greedy(tiny_artifacts["hf"], PROMPTS, reference, _greedy(tiny_artifacts[fmt], PROMPTS, 24))


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_tokenize_and_chat_prompt_equal_pytorch_when_exported(tiny_artifacts, fmt):
    _needs(fmt)
    messages = [{"role": "user", "content": "naïve café — 日本 ✓"}]
    with edgekit.load(tiny_artifacts["hf"]) as ref, edgekit.load(tiny_artifacts[fmt]) as other:
        assert other.tokenize(PROMPTS[2]) == ref.tokenize(PROMPTS[2])
        assert other.prompt_ids(messages) == ref.prompt_ids(messages)
        assert other.eos_token_ids == ref.eos_token_ids


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_stream_equals_generate_and_seed_repeats_when_exported(tiny_artifacts, fmt):
    _needs(fmt)
    with edgekit.load(tiny_artifacts[fmt]) as model:
        args = dict(max_tokens=24, temperature=0.9, seed=5, ignore_eos=True)
        text = model.generate("import os", **args)
        assert model.generate("import os", **args) == text
        assert "".join(model.stream("import os", **args)) == text


def _damage(src: Path, dst: Path, how: str) -> None:
    data = src.read_bytes()
    if how == "empty":
        dst.write_bytes(b"")
    elif how == "random":
        dst.write_bytes(data[:4] + os.urandom(4096))  # keeps the magic so the format's own check runs
    else:
        dst.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_damaged_artifacts_give_clear_error_in_child_that_exits_normally(tiny_artifacts, fmt, tmp_path):
    _needs(fmt)
    targets = []
    for how in ("empty", "random", "truncated"):
        if fmt == "gguf":
            target = tmp_path / f"{how}.gguf"
            _damage(tiny_artifacts["gguf"], target, how)
        else:
            target = tmp_path / how
            target.mkdir()
            for f in tiny_artifacts["onnx"].iterdir():
                if f.is_file():
                    (target / f.name).write_bytes(f.read_bytes())
            onnx_file = next(target.glob("*.onnx"))
            _damage(onnx_file, onnx_file, how)
        targets.append(str(target))
    script = (
        "import sys, edgekit\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        edgekit.load(path)\n"
        "        print('LOADED', path)\n"
        "    except edgekit.InputError as exc:\n"
        "        print('CLEAR', exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *targets], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("CLEAR") for line in lines), proc.stdout


def test_damaged_gguf_raises_input_error_in_process(tmp_path):
    _needs("gguf")
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + bytes(16))
    with pytest.raises(InputError):
        edgekit.load(path)


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_demo_teacher_greedy_is_identical_on_pytorch_and_export(tmp_path, fmt):
    _needs(fmt)
    from edgekit.demo import demo_teacher

    teacher = demo_teacher(progress=False)
    got = _greedy(export(teacher, fmt, tmp_path), PROMPTS, 32)
    assert_same_greedy(teacher, PROMPTS, _greedy(teacher, PROMPTS, 32), got)
