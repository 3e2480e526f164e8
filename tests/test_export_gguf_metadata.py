"""GGUF metadata: tokenizer flags and template, RoPE scaling, padded vocabularies, half-precision files,
per-tensor overrides, imatrix provenance and files, and tokenizers that cannot be represented."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import tiny_vocab_size

from edgekit.errors import ConfigError, UnsupportedModelError
from edgekit.export.gguf import export_gguf
from edgekit.export.gguf_tokenizer import vocab_from_tokenizer
from edgekit.export.imatrix import compute_imatrix, load_imatrix_file
from edgekit.export.quantize import FTYPES
from edgekit.export.sidecar import read_sidecar
from edgekit.export.verify import verify_artifact
from edgekit.models import TinySpec, load_model, save_model, tiny_config, tiny_model


def field(reader: gguf.GGUFReader, key: str):
    """A scalar or string metadata value of a GGUF file (None when absent)."""
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def test_gguf_carries_chat_template_and_bos_eos_flags_when_exported(make_tiny_hf, tmp_path, bpe_tokenizer):
    (bpe,) = export_gguf(make_tiny_hf("llama", tokenizer="bpe"), tmp_path / "bpe", ["F16"], progress=False)
    (sp,) = export_gguf(make_tiny_hf("mistral", tokenizer="sp"), tmp_path / "sp", ["F16"], progress=False)
    r = gguf.GGUFReader(bpe)
    assert field(r, "tokenizer.chat_template") == bpe_tokenizer.chat_template
    assert (field(r, "tokenizer.ggml.add_bos_token"), field(r, "tokenizer.ggml.add_eos_token")) == (True, False)
    assert field(r, "tokenizer.ggml.bos_token_id") == bpe_tokenizer.bos_token_id
    assert (field(r, "tokenizer.ggml.model"), field(r, "tokenizer.ggml.pre")) == ("gpt2", "gpt-2")
    r = gguf.GGUFReader(sp)
    assert field(r, "tokenizer.ggml.model") == "llama" and field(r, "tokenizer.ggml.add_space_prefix") is True
    assert field(r, "tokenizer.chat_template") is None  # the SentencePiece test tokenizer has none


def _rope_model(tmp_path: Path, bpe_tokenizer, arch: str, scaling: dict) -> Path:
    config = tiny_config(TinySpec(arch=arch, vocab_size=tiny_vocab_size(arch, bpe_tokenizer)))
    config.rope_parameters = {**scaling, "rope_theta": 10000.0}  # transformers 5: theta lives in rope_parameters
    config.initializer_range = 0.08
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return save_model(model, bpe_tokenizer, tmp_path / f"rope-{arch}")


ROPE_CASES = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}


def test_gguf_rope_base_is_the_configs_rope_theta_when_transformers_5_nests_it(make_tiny_hf, tmp_path):
    """transformers 5 has no ``config.rope_theta``: it lives in ``rope_parameters``; a default of 1e4 would be wrong."""
    (path,) = export_gguf(make_tiny_hf("llama", rope_theta=500000.0), tmp_path, ["F16"], progress=False)
    assert field(gguf.GGUFReader(path), "llama.rope.freq_base") == pytest.approx(500000.0)


@pytest.mark.parametrize(
    ("arch", "kind"),
    [("llama", "linear"), ("llama", "yarn"), ("llama", "llama3"), ("qwen2", "linear"), ("qwen2", "yarn")],
)
def test_rope_scaling_matches_pytorch_when_exported(tmp_path, bpe_tokenizer, arch, kind):
    """512 held-out positions, past the original context of 64/128: wrong frequencies show up as KL."""
    model_dir = _rope_model(tmp_path, bpe_tokenizer, arch, ROPE_CASES[kind])
    (path,) = export_gguf(model_dir, tmp_path / "out", ["F32"], progress=False)
    report = verify_artifact(path, model_dir, max_tokens=512)
    assert report.mean_kl <= 1e-5, report.table()
    reader = gguf.GGUFReader(path)
    if kind == "llama3":  # per-frequency divisors as a tensor, no scaling keys
        assert "rope_freqs.weight" in tensor_types(path)
        assert field(reader, f"{arch}.rope.scaling.type") is None
    else:
        assert field(reader, f"{arch}.rope.scaling.type") == kind
        assert field(reader, f"{arch}.rope.scaling.factor") == 4.0


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "beta_fast": 16},
    ],
)
def test_rope_scaling_refused_with_reason_when_llama_cpp_would_differ(tmp_path, bpe_tokenizer, scaling):
    model_dir = _rope_model(tmp_path, bpe_tokenizer, "llama", scaling)
    with pytest.raises(UnsupportedModelError, match="cannot be represented") as info:
        export_gguf(model_dir, tmp_path / "out", ["F32", "Q4_K_M"], progress=False)
    assert str(model_dir) in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("style", ["bpe", "sp"])
def test_vocab_is_padded_to_embedding_rows_when_model_has_spare_rows(tmp_path, bpe_tokenizer, sp_tokenizer, style):
    """Models round their embedding up (Qwen2: 151936 rows, 151665 tokens); llama.cpp needs a token per row."""
    tok = bpe_tokenizer if style == "bpe" else sp_tokenizer
    model_dir = save_model(tiny_model(TinySpec(vocab_size=len(tok) + 8)), tok, tmp_path / "model")
    (path,) = export_gguf(model_dir, tmp_path / "out", ["F32"], progress=False)
    report = verify_artifact(path, model_dir, max_tokens=256)
    assert report.mean_kl <= 1e-5 and report.tokenizer_parity, report.table()
    assert len(field(gguf.GGUFReader(path), "tokenizer.ggml.tokens")) == len(tok) + 8


def test_half_precision_files_have_their_types_and_verify_when_written(trained_tiny_dir, tmp_path):
    f16, bf16 = export_gguf(trained_tiny_dir, tmp_path, ["F16", "BF16"], progress=False)
    for path, level in ((f16, "F16"), (bf16, "BF16")):
        types = tensor_types(path)
        assert types["blk.0.attn_q.weight"] == level and types["blk.0.attn_norm.weight"] == "F32"
        assert field(gguf.GGUFReader(path), "general.file_type") == FTYPES[level]
        report = verify_artifact(path, trained_tiny_dir, max_tokens=256)
        assert report.passed, report.table()
    assert verify_artifact(f16, trained_tiny_dir, max_tokens=256).mean_kl < 1e-4


def test_q6_k_and_q4_0_are_real_llama_cpp_quants_that_verify(trained_tiny_dir, tmp_path):
    q6, q4 = export_gguf(trained_tiny_dir, tmp_path, ["Q6_K", "Q4_0"], progress=False)
    assert "Q6_K" in tensor_types(q6).values() and "Q4_0" in tensor_types(q4).values()
    assert field(gguf.GGUFReader(q4), "general.file_type") == FTYPES["Q4_0"]
    for path in (q6, q4):
        report = verify_artifact(path, trained_tiny_dir, max_tokens=256)
        assert report.passed, report.table()


def test_type_overrides_and_imatrix_provenance_are_in_the_file_when_quantized(trained_tiny_dir, tmp_path):
    overrides = {r"^output\.weight$": "Q8_0", r"ffn_up": "F16"}
    (path,) = export_gguf(trained_tiny_dir, tmp_path, ["Q4_K_M"], type_overrides=overrides, progress=False)
    types = tensor_types(path)
    assert types["output.weight"] == "Q8_0" and types["blk.0.ffn_up.weight"] == "F16"
    assert types["blk.0.ffn_gate.weight"] == "Q4_K"  # everything else follows the level
    reader, sidecar = gguf.GGUFReader(path), read_sidecar(path)
    assert field(reader, "quantize.imatrix.entries_count") == sidecar["imatrix"]["entries"] == 15  # 2 x 7 + output
    assert field(reader, "quantize.imatrix.chunks_count") == 16
    assert "built-in corpus" in field(reader, "quantize.imatrix.dataset")
    assert sidecar["type_overrides"] == overrides


def test_bad_type_override_is_refused_before_anything_is_written(trained_tiny_dir, tmp_path):
    with pytest.raises(ConfigError) as info:
        export_gguf(trained_tiny_dir, tmp_path / "out", ["Q4_K_M"], type_overrides={"(": "Q9_9"}, progress=False)
    assert len(info.value.problems) == 2  # the bad regex and the unknown type, both named
    assert not (tmp_path / "out").exists()


def test_saved_imatrix_reproduces_the_same_quantized_tensors_when_reused(trained_tiny_dir, tmp_path):
    (first,) = export_gguf(trained_tiny_dir, tmp_path / "a", ["Q4_K_M"], progress=False)
    saved = tmp_path / "a" / "model-imatrix.safetensors"
    assert saved.is_file()
    (again,) = export_gguf(trained_tiny_dir, tmp_path / "b", ["Q4_K_M"], imatrix=saved, progress=False)
    (plain,) = export_gguf(trained_tiny_dir, tmp_path / "c", ["Q4_K_M"], imatrix=None, progress=False)

    def data(path: Path) -> dict[str, bytes]:
        return {t.name: bytes(t.data) for t in gguf.GGUFReader(path).tensors}

    assert data(first) == data(again)
    assert data(first)["blk.0.ffn_gate.weight"] != data(plain)["blk.0.ffn_gate.weight"]  # the matrix mattered
    assert read_sidecar(again)["imatrix"]["file"] == saved.name


def test_llama_imatrix_gguf_file_reads_as_mean_squares(tmp_path):
    """llama-imatrix stores Σx² (``.in_sum2``) and token counts (``.counts``); the quantizer wants their ratio."""
    writer = gguf.GGUFWriter(tmp_path / "imatrix.gguf", "imatrix")
    writer.add_uint32("imatrix.chunk_count", 7)
    writer.add_tensor("blk.0.ffn_up.weight.in_sum2", np.array([2.0, 4.0, 6.0], dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up.weight.counts", np.array([2.0], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    values, info = load_imatrix_file(tmp_path / "imatrix.gguf")
    np.testing.assert_allclose(values["blk.0.ffn_up.weight"], [1.0, 2.0, 3.0])
    assert info["chunks"] == 7


@torch.no_grad()
def test_imatrix_output_entry_is_named_token_embd_when_embeddings_are_tied(make_tiny_hf):
    """llama.cpp names an imatrix entry after the weight read; tied models read token_embd for the output."""
    model = load_model(make_tiny_hf("qwen2", tie_word_embeddings=True))
    values, _ = compute_imatrix(model, torch.randint(0, 500, (1, 16)))
    assert "token_embd.weight" in values and "output.weight" not in values


def _with_tokenizer_spec(tok, edit, **kwargs) -> object:
    """A copy of a fast tokenizer whose tokenizer.json was changed by ``edit(spec)``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tok.backend_tokenizer.to_str())
    edit(spec)
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=tok.bos_token, **kwargs)


def _wordpiece():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _set(key, value):
    return lambda spec: spec.__setitem__(key, value)


UNREPRESENTABLE = {
    "wordpiece": (None, "WordPiece"),
    "lowercase": (_set("normalizer", {"type": "Lowercase"}), "Lowercase"),
    "nfkc": (_set("normalizer", {"type": "NFKC"}), "NFKC"),
    "custom-split": (
        _set(
            "pre_tokenizer",
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": r"\w+|\W"}, "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
                ],
            },
        ),
        "is none of the .* llama.cpp types edgekit maps.*closest by behaviour",
    ),
    "prefix-space": (
        _set("pre_tokenizer", {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}),
        "prefix space",
    ),
}


@pytest.mark.parametrize("case", sorted(UNREPRESENTABLE))
def test_tokenizer_refused_with_reason_when_gguf_cannot_represent_it(bpe_tokenizer, case):
    edit, reason = UNREPRESENTABLE[case]
    tok = _wordpiece() if edit is None else _with_tokenizer_spec(bpe_tokenizer, edit)
    with pytest.raises(UnsupportedModelError, match=reason):
        vocab_from_tokenizer(tok)


def test_nfc_normalizer_is_accepted_when_byte_level(bpe_tokenizer):
    """Qwen2's tokenizer normalizes to NFC; llama.cpp does not, which changes nothing for NFC text."""
    tok = _with_tokenizer_spec(bpe_tokenizer, _set("normalizer", {"type": "NFC"}))
    assert vocab_from_tokenizer(tok).pre == "gpt-2"


def test_unrepresentable_tokenizer_names_the_folder_and_writes_nothing(bpe_tokenizer, tmp_path):
    tok = _with_tokenizer_spec(bpe_tokenizer, _set("normalizer", {"type": "Lowercase"}))
    model_dir = save_model(tiny_model(TinySpec(vocab_size=len(tok))), tok, tmp_path / "model")
    with pytest.raises(UnsupportedModelError, match="Lowercase") as info:
        export_gguf(model_dir, tmp_path / "out", ["F32", "Q4_K_M"], progress=False)
    assert str(model_dir) in str(info.value)
    assert not (tmp_path / "out").exists()


def _reindexed(tok):
    """The same tokenizer with its merged tokens' ids reversed (as a pruned, re-packed vocabulary may be)."""

    def edit(spec):
        vocab = spec["model"]["vocab"]
        merged = sorted((i for t, i in vocab.items() if len(t) > 1 and not t.startswith("<")), reverse=False)
        new_id = dict(zip(merged, reversed(merged), strict=True))
        spec["model"]["vocab"] = {t: new_id.get(i, i) for t, i in vocab.items()}

    return _with_tokenizer_spec(tok, edit, eos_token=tok.eos_token, unk_token=tok.unk_token)


@pytest.mark.parametrize("style", ["bpe", "sp"])
def test_tokenizer_parity_holds_when_vocabulary_ids_are_reordered(tmp_path, bpe_tokenizer, sp_tokenizer, style):
    """Merge priority comes from the merges, not from token ids: a re-indexed vocabulary still exports faithfully."""
    from edgekit.export.stress import stress_texts
    from edgekit.runtime.llamacpp import LlamaCppBackend

    tok = _reindexed(bpe_tokenizer if style == "bpe" else sp_tokenizer)
    base = bpe_tokenizer if style == "bpe" else sp_tokenizer
    assert tok("hello world")["input_ids"] != base("hello world")["input_ids"]  # really re-indexed
    model_dir = save_model(tiny_model(TinySpec(vocab_size=len(tok))), tok, tmp_path / "model")
    (path,) = export_gguf(model_dir, tmp_path / "out", ["F16"], progress=False)
    backend = LlamaCppBackend(path)
    try:
        for text in stress_texts(tok):
            assert backend.tokenize(text) == tok(text, split_special_tokens=True)["input_ids"], text
    finally:
        backend.close()
