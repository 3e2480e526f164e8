"""Foundation pieces: atomic writes, quality metrics, corpus splits, models and tokenizers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.data import builtin_documents, is_heldout, load_texts, pack, split_documents
from edgekit.errors import InputError, UnsupportedModelError
from edgekit.fileio import atomic_path, write_json_atomic
from edgekit.models import TinySpec, count_parameters, load_model, load_tokenizer, tiny_model
from edgekit.quality import compare_logits, kl_per_token, perplexity


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_an_existing_folder_when_the_writer_succeeds(tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "old").write_text("x")
    with atomic_path(tmp_path / "art") as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in (tmp_path / "art").iterdir()] == ["new"]
    write_json_atomic(tmp_path / "a.json", {"b": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": 1}


def test_kl_is_zero_for_identical_logits_and_positive_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 11))
    assert np.allclose(kl_per_token(logits, logits), 0.0)
    assert (kl_per_token(logits, logits + rng.normal(size=logits.shape)) > 0).all()


def test_compare_logits_matches_hand_computed_values():
    ref = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    cand = np.log(np.array([[0.25, 0.75], [0.9, 0.1]]))
    result = compare_logits(ref, cand, np.array([0, 0]))
    expected_kl = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)) / 2
    assert result.mean_kl == pytest.approx(expected_kl)
    assert result.top1 == 0.5  # first row ties at argmax 0 vs 1
    assert result.ppl_reference == pytest.approx(np.exp(-(np.log(0.5) + np.log(0.9)) / 2))
    assert perplexity(cand, np.array([1, 0])) == pytest.approx(np.exp(-(np.log(0.75) + np.log(0.9)) / 2))


def test_heldout_split_is_stable_when_documents_are_reordered():
    docs = list(builtin_documents()[:300])
    _, heldout = split_documents(docs, 0.1)
    _, heldout_reversed = split_documents(reversed(docs), 0.1)
    assert sorted(heldout) == sorted(heldout_reversed) and 0 < len(heldout) < 300
    assert all(is_heldout(d, 0.1) for d in heldout)


def test_builtin_corpus_is_large_enough_to_train_on():
    assert sum(map(len, builtin_documents())) > 1_000_000


def test_pack_cuts_rows_of_seq_len_and_refuses_too_little_text():
    rows = pack([[1, 2, 3], [4, 5, 6, 7]], seq_len=3)
    assert rows.tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="not enough text"):
        pack([[1]], seq_len=4)


def test_load_texts_names_file_and_line_when_jsonl_is_malformed(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    with pytest.raises(InputError, match=r"d\.jsonl: line 2"):
        load_texts(path)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_tiny_model_parameter_count_matches_the_formula(arch):
    spec = TinySpec(arch=arch)
    model = tiny_model(spec)
    head_dim = spec.hidden_size // spec.num_heads
    kv = spec.num_kv_heads * head_dim
    attn = 2 * spec.hidden_size * spec.hidden_size + 2 * spec.hidden_size * kv
    attn += (spec.hidden_size + 2 * kv) if arch == "qwen2" else 0  # q/k/v biases
    mlp = 3 * spec.hidden_size * spec.intermediate_size
    per_layer = attn + mlp + 2 * spec.hidden_size
    expected = spec.num_layers * per_layer + 2 * spec.vocab_size * spec.hidden_size + spec.hidden_size
    assert count_parameters(model) == expected


def test_tiny_model_is_deterministic_for_a_seed():
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_unknown_tiny_arch_is_refused_with_the_supported_list():
    with pytest.raises(UnsupportedModelError, match="llama"):
        tiny_model(arch="gpt2")


def test_load_model_reads_safetensors_folder_and_refuses_missing_ones(tiny_llama_dir, tmp_path):
    model = load_model(tiny_llama_dir)
    assert model.config.model_type == "llama" and not model.training
    assert list(tiny_llama_dir.glob("*.safetensors")) and not list(tiny_llama_dir.glob("*.bin"))
    with pytest.raises(InputError, match="folder not found"):
        load_model(tmp_path / "nope")


def test_unreachable_hub_id_gives_one_line_offline_hint(monkeypatch):
    import edgekit.models

    monkeypatch.setattr(edgekit.models, "_hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(InputError) as info:
        load_tokenizer("someone/not-a-real-model-xyz")
    assert "\n" not in str(info.value) and "local" in str(info.value)


def test_sentencepiece_tokenizer_round_trips_bytes_it_never_saw(sp_tokenizer):
    text = "naïve 世界 🙂\ttabs  and   spaces"
    ids = sp_tokenizer(text)["input_ids"]
    assert ids[0] == sp_tokenizer.bos_token_id
    assert sp_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert "<0xF0>" in sp_tokenizer.convert_ids_to_tokens(ids)


def test_byte_level_tokenizer_round_trips_arbitrary_text(bpe_tokenizer):
    text = "def f(x):\n    return x  # ünïcödé ✓ 中文"
    ids = bpe_tokenizer(text)["input_ids"]
    assert bpe_tokenizer.decode(ids, skip_special_tokens=True) == text
