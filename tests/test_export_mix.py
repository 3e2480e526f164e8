"""Sensitivity-aware GGUF mixes end to end: budgets hold, files carry the types their sidecars record."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from edgekit.export.gguf import export_gguf
from edgekit.export.sensitivity import KLMeter, TensorMap, dequantized
from edgekit.export.sidecar import read_sidecar
from edgekit.models import load_model


def _weights(path):
    """{name: (GGML type, bytes, weights)} of the 2-D tensors of a GGUF file."""
    reader = gguf.GGUFReader(path)
    return {
        t.name: (gguf.GGMLQuantizationType(t.tensor_type).name, int(t.n_bytes), int(t.n_elements))
        for t in reader.tensors
        if len(t.shape) >= 2
    }


def test_allocated_q4_k_m_fits_llama_cpps_size_and_records_its_types(trained_tiny_dir, tmp_path):
    (preset,) = export_gguf(trained_tiny_dir, tmp_path / "preset", ["Q4_K_M"], progress=False)
    (mixed,) = export_gguf(trained_tiny_dir, tmp_path / "mix", ["Q4_K_M"], allocate="auto", progress=False)
    ours, theirs = _weights(mixed), _weights(preset)
    assert sum(b for _, b, _ in ours.values()) <= sum(b for _, b, _ in theirs.values())
    side = read_sidecar(mixed)
    assert side["quantization"] == "Q4_K_M"
    alloc = side["allocation"]
    assert alloc["types"] == {name: t for name, (t, _, _) in ours.items()}
    assert alloc["bytes"] <= alloc["budget_bytes"] == sum(b for _, b, _ in theirs.values())
    assert alloc["method"] in ("measure", "fisher") and alloc["calibration_tokens"] > 0
    # the choice is measured against llama.cpp's own mix and kept only if no worse on calibration text
    assert alloc["measured_kl"] <= alloc["preset_measured_kl"] or alloc["kept_llama_cpp_mix"]
    assert set(alloc["imatrix_tensors"]) <= set(ours)


def test_bits_per_weight_targets_hold_their_budget(trained_tiny_dir, tmp_path):
    paths = export_gguf(trained_tiny_dir, tmp_path, [], allocate="fisher", bpw=[3.5, 5.0], progress=False)
    assert [p.name for p in paths] == ["model-3.5bpw.gguf", "model-5bpw.gguf"]
    for path, bpw in zip(paths, (3.5, 5.0), strict=True):
        tensors = _weights(path).values()
        assert sum(b for _, b, _ in tensors) * 8 <= bpw * sum(n for _, _, n in tensors)
        side = read_sidecar(path)
        assert side["allocation"]["bits_per_weight"] == bpw and side["allocation"]["method"] == "fisher"
    low, high = (sum(b for _, b, _ in _weights(p).values()) for p in paths)
    assert low < high


def test_widths_k_quants_cannot_hold_get_llama_cpps_fallbacks(bpe_tokenizer, tmp_path):
    from edgekit.models import TinySpec, save_model, tiny_model

    spec = TinySpec(arch="qwen2", vocab_size=len(bpe_tokenizer) + 64, hidden_size=320, tie_word_embeddings=True)
    model_dir = save_model(tiny_model(spec), bpe_tokenizer, tmp_path / "model")
    (path,) = export_gguf(model_dir, tmp_path, ["Q4_K_M"], allocate="fisher", progress=False)
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        if len(t.shape) >= 2:
            kind = gguf.GGMLQuantizationType(t.tensor_type)
            assert int(t.shape[0]) % gguf.GGML_QUANT_SIZES[kind][0] == 0, (t.name, kind.name)
    assert read_sidecar(path)["allocation"]["types"]["blk.0.attn_q.weight"] in (
        "IQ4_NL",
        "Q4_0",
        "Q5_0",
        "Q5_1",
        "Q8_0",
    )


def test_bpw_without_allocation_is_refused(trained_tiny_dir, tmp_path):
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="bits-per-weight"):
        export_gguf(trained_tiny_dir, tmp_path, [], bpw=[4.0], progress=False)


def test_tensor_map_undoes_the_rotary_row_permutation(trained_tiny_dir, tmp_path):
    (base,) = export_gguf(trained_tiny_dir, tmp_path, ["F32"], progress=False)
    model = load_model(trained_tiny_dir)
    tmap = TensorMap(model, gguf.GGUFReader(base))
    assert tmap.rows["blk.0.attn_q.weight"] is not None  # llama: q rows are interleaved in GGUF
    for name, _, data in dequantized(gguf.GGUFReader(base)):
        np.testing.assert_array_equal(tmap.to_model(name, data).numpy(), tmap.params[name].detach().numpy())


def test_kl_meter_reads_zero_for_the_fp_model_and_grows_with_noise(trained_tiny_dir):
    from edgekit.data import training_set
    from edgekit.models import load_tokenizer

    model = load_model(trained_tiny_dir)
    rows = training_set(load_tokenizer(trained_tiny_dir), seq_len=64, max_sequences=2)
    meter = KLMeter(model, rows)
    assert abs(meter()) < 1e-9
    w = model.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        w.add_(torch.randn_like(w) * 0.01)
        small = meter()
        w.add_(torch.randn_like(w) * 0.05)
        assert meter() > small > 0


def test_measured_and_fisher_sensitivities_agree_on_what_costs_more(trained_tiny_dir, tmp_path):
    from edgekit.data import training_set
    from edgekit.export.sensitivity import probe
    from edgekit.models import load_tokenizer

    (base,) = export_gguf(trained_tiny_dir, tmp_path, ["F32"], progress=False)
    model = load_model(trained_tiny_dir)
    rows = training_set(load_tokenizer(trained_tiny_dir), seq_len=128, max_sequences=4)
    runs = {
        m: probe(model, base, rows, types=("Q3_K", "Q8_0"), method=m, workdir=tmp_path / m)
        for m in ("measure", "fisher")
    }
    kl = {m: {(n, o.ggml_type): o.kl for n, opts in r.options.items() for o in opts} for m, r in runs.items()}
    assert kl["measure"].keys() == kl["fisher"].keys()
    for (name, kind), value in kl["measure"].items():
        if kind == "Q3_K":  # 8 bits move the model far less than 3 (measured, and by the estimate)
            assert kl["measure"][name, "Q8_0"] < value and kl["fisher"][name, "Q8_0"] < kl["fisher"][name, kind]
    total = {m: sum(v for (_, k), v in kl[m].items() if k == "Q3_K") for m in kl}
    assert 0.5 < total["fisher"] / total["measure"] < 2.0  # the second-order estimate is of the right size
