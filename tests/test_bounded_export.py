"""Bounded-memory export and verification: one reference pass for every level, the fp model
released before any child process, the same verdicts as the fp32 path, auto allocation's fallback."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

import edgekit.isolate
import edgekit.models
from edgekit.export.gguf import export_gguf
from edgekit.export.reference import reference_for
from edgekit.export.sidecar import read_sidecar
from edgekit.export.verify import artifact_side, reference_rows, verify_artifact
from edgekit.models import load_model, load_tokenizer
from edgekit.quality import compare_logits


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory, trained_tiny_dir):
    """The trained tiny Llama saved in bf16 with its tokenizer (the shape of a real checkpoint)."""
    folder = tmp_path_factory.mktemp("bf16-llama")
    load_model(trained_tiny_dir).to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    load_tokenizer(trained_tiny_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(bf16_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    return export_gguf(bf16_dir, out, ["F16", "Q8_0"], imatrix=None, progress=False)


@pytest.fixture
def loads(monkeypatch):
    """Every model edgekit.models.load_model returns, weakly referenced, in call order."""
    seen: list[weakref.ref] = []
    real = edgekit.models.load_model

    def counting(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append(weakref.ref(model))
        return model

    monkeypatch.setattr(edgekit.models, "load_model", counting)
    return seen


def _released(ref: weakref.ref) -> bool:
    gc.collect()
    model = ref()
    return model is None or not any(True for _ in model.parameters())


def test_one_reference_pass_for_all_levels_and_model_released_before_the_runtime(
    exported, bf16_dir, loads, monkeypatch
):
    real = edgekit.isolate.run_isolated
    checked = []

    def guarded(*args, **kwargs):
        checked.append(all(_released(r) for r in loads))
        return real(*args, **kwargs)

    monkeypatch.setattr(edgekit.isolate, "run_isolated", guarded)
    with reference_for(bf16_dir, max_tokens=256) as ref:
        reports = [verify_artifact(p, bf16_dir, prepared=ref) for p in exported]
    assert len(loads) == 1  # one load for two levels
    assert checked == [True, True]  # nothing of the fp model left when each runtime child started
    assert all(r.reference_seconds == ref.seconds > 0 and r.runtime_seconds > 0 for r in reports)
    assert [r.level for r in reports] == ["F16", "Q8_0"] and all(r.passed for r in reports)
    side = read_sidecar(exported[1])["verification"]
    assert side["reference_seconds"] > 0 and side["runtime_seconds"] > 0


def test_verdicts_equal_the_fp32_whole_batch_path(exported, bf16_dir, one_torch_thread):
    """Today's path, spelled out: fp32 model, logits of all rows at once, one compare_logits."""
    path = exported[1]
    tokenizer = load_tokenizer(bf16_dir)
    rows = reference_rows(tokenizer, None, 512)
    with torch.no_grad():
        ref = load_model(bf16_dir)(input_ids=rows).logits.float().numpy()
    with reference_for(bf16_dir, max_tokens=512) as prepared:
        assert np.array_equal(prepared.rows.numpy(), rows.numpy())
        np.testing.assert_allclose(prepared.logits(), ref, rtol=0, atol=1e-5)
        report = verify_artifact(path, bf16_dir, prepared=prepared, record=False)
        cases = [(t, p) for t, p, _ in prepared.cases(gguf=True)]
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            side = artifact_side(str(path), rows.tolist(), cases, {}, tmp)
            cand = np.load(side["logits"])
    vocab = ref.shape[-1]
    old = compare_logits(
        ref[:, :-1].reshape(-1, vocab), cand[:, :-1, :vocab].reshape(-1, vocab), rows[:, 1:].reshape(-1).numpy()
    )
    assert report.tokens == old.tokens
    assert report.top1 == pytest.approx(old.top1, abs=1e-12)
    for mine, theirs in [(report.mean_kl, old.mean_kl), (report.max_kl, old.max_kl)]:
        assert mine == pytest.approx(theirs, rel=1e-4, abs=1e-9)
    assert report.ppl_artifact == pytest.approx(old.ppl_candidate, rel=1e-6)
    assert report.ppl_reference == pytest.approx(old.ppl_reference, rel=1e-6)


def test_cli_verifies_every_level_with_one_load(exported, bf16_dir, loads):
    from edgekit.cli.export import _verify_all

    _verify_all(exported, bf16_dir, None, ["F16", "Q8_0"], 256)
    assert len(loads) == 1


def test_export_releases_the_model_before_quantizing_and_keeps_bf16(bf16_dir, tmp_path, loads, monkeypatch):
    import edgekit.export.quantize as quantize

    real, checked = quantize.quantize_gguf, []

    def guarded(*args, **kwargs):
        checked.append(all(_released(r) for r in loads))
        return real(*args, **kwargs)

    monkeypatch.setattr(quantize, "quantize_gguf", guarded)
    monkeypatch.setattr("edgekit.export.mix.AUTO_MAX_WEIGHTS", 0)  # this tiny model counts as large
    (path,) = export_gguf(bf16_dir, tmp_path, ["Q4_K_M"], allocate="auto", progress=False)
    assert checked == [True]
    assert len(loads) == 1
    side = read_sidecar(path)
    assert "allocation" not in side and "llama.cpp's own mixes" in side["allocation_skipped"]
    assert side["imatrix"]["tokens"] > 0


def test_imatrix_of_export_equals_the_fp32_models(bf16_dir, tmp_path):
    from edgekit.data import training_set
    from edgekit.export.imatrix import compute_imatrix, load_imatrix_file

    export_gguf(bf16_dir, tmp_path, ["Q4_K_M"], progress=False, name="m")
    saved, _ = load_imatrix_file(tmp_path / "m-imatrix.safetensors")
    rows = training_set(load_tokenizer(bf16_dir), seq_len=256, max_sequences=16)
    want, _ = compute_imatrix(load_model(bf16_dir), rows)
    assert saved.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(saved[name], want[name], rtol=1e-6, err_msg=name)


def test_build_verify_stage_loads_the_reference_once(exported, bf16_dir, loads, tmp_path):
    from edgekit.pipeline.config import VerifySection
    from edgekit.pipeline.stages import run_verify
    from edgekit.targets import load_target

    root = exported[0].parent
    entries = [{"path": p.name, "format": "gguf", "quant": q} for p, q in zip(exported, ["F16", "Q8_0"], strict=True)]
    result = run_verify(tmp_path, root, entries, bf16_dir, load_target("x86-laptop"), VerifySection(max_tokens=256))
    assert len(loads) == 1 and len(result["reports"]) == 2
    assert all(r["reference_seconds"] > 0 and r["runtime_seconds"] > 0 for r in result["reports"])
    assert not list(tmp_path.iterdir())  # the reference's logits file went with its temporary folder
