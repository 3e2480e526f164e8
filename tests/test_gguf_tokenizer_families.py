"""GGUF tokenizers: every family llama.cpp represents exports faithfully; everything else is refused.

Three tiers: hand-made tokenizer.json structures (fast, no llama.cpp needed), refusals and crashes,
and llama.cpp's own test vocabularies (``tests/llama_vocab.py``) exported and tokenized by
llama.cpp against the ids the original HF tokenizers give (integration).
"""

from __future__ import annotations

import json
from dataclasses import replace

import llama_vocab as lv
import pytest

from edgekit.errors import NativeCrash, UnsupportedModelError
from edgekit.export import gguf_pretok as pt
from edgekit.export.gguf_tokenizer import LLAMA_CONTROL_TEXTS, vocab_from_tokenizer
from edgekit.export.gguf_vocab_check import (
    added_tokens,
    confirm_vocab,
    hf_ids,
    llama_tokenize,
    plain_texts,
    write_vocab_only,
)


def _edited(tok, edit, **kwargs):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tok.backend_tokenizer.to_str())
    edit(spec)
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token=tok.bos_token, **kwargs
    )


def _with_pre(pre):
    return lambda spec: spec.__setitem__("pre_tokenizer", pre)


# structure as published tokenizer.json files write it -> the llama.cpp type it must map to
HAND_MADE = {
    "gpt-2": (lv._byte_level(True), "gpt-2"),
    "llama3 (?i:) spelling": (lv._seq(lv._split(lv.LLAMA3_HF), lv._byte_level(False)), "dbrx"),
    "qwen2 (?i:) spelling": (lv._seq(lv._split(lv.QWEN2_HF), lv._byte_level(False)), "qwen2"),
    "qwen2 expanded spelling": (lv._seq(lv._split(pt.QWEN2), lv._byte_level(False)), "qwen2"),
    "qwen35": (lv._seq(lv._split(lv.QWEN35_HF), lv._byte_level(False)), "qwen35"),
    "smollm": (lv.BYTE_LEVEL_FAMILIES["starcoder"][0], "smollm"),
    "deepseek-coder": (lv.BYTE_LEVEL_FAMILIES["deepseek-coder"][0], "deepseek-coder"),
    "deepseek-v3": (lv._seq(*(lv._split(r) for r in pt.DEEPSEEK_V3), lv._byte_level(False)), "deepseek-v3"),
    "falcon": (lv.BYTE_LEVEL_FAMILIES["falcon"][0], "falcon"),
    "tekken": (lv._seq(lv._split(pt.TEKKEN), lv._byte_level(False)), "tekken"),
    "gpt-4o": (lv._seq(lv._split(pt.GPT4O), lv._byte_level(False)), "gpt-4o"),
}


@pytest.mark.parametrize("case", sorted(HAND_MADE))
def test_hand_made_structure_maps_to_its_llama_cpp_type_and_is_confirmed(bpe_tokenizer, case):
    pre, expected = HAND_MADE[case]
    tok = _edited(bpe_tokenizer, _with_pre(pre))
    assert vocab_from_tokenizer(tok, confirm=False).pre == expected
    vocab = vocab_from_tokenizer(tok)  # confirmed by behaviour (llama.cpp itself when installed)
    assert vocab.pre == expected and vocab.merges


def test_ignore_merges_picks_the_llama_bpe_name_for_the_llama3_regex(bpe_tokenizer):
    def edit(spec):
        spec["pre_tokenizer"] = lv._seq(lv._split(lv.LLAMA3_HF), lv._byte_level(False))
        spec["model"]["ignore_merges"] = True

    assert vocab_from_tokenizer(_edited(bpe_tokenizer, edit)).pre == "llama-bpe"


def test_byte_level_bpe_with_byte_fallback_stays_byte_level_with_merges(bpe_tokenizer):
    tok = _edited(bpe_tokenizer, lambda spec: spec["model"].__setitem__("byte_fallback", True))
    vocab = vocab_from_tokenizer(tok)
    assert (vocab.model, vocab.pre) == ("gpt2", "gpt-2") and vocab.merges and vocab.scores is None


def test_canonical_spellings_agree():
    assert pt.canonical(lv.QWEN2_HF) == pt.canonical(pt.QWEN2)
    assert pt.canonical(lv.GPT2_HF) == pt.canonical(pt.GPT2)
    assert pt.canonical("[\r\n]") == pt.canonical(r"[\r\n]")
    assert pt.canonical(pt.QWEN2) != pt.canonical(pt.LLAMA3)


# ---- refusals --------------------------------------------------------------------------------------


def test_unknown_split_is_refused_naming_the_closest_type_and_a_differing_string(bpe_tokenizer):
    tok = _edited(bpe_tokenizer, _with_pre(lv._seq(lv._split(r"\w+|\W"), lv._byte_level(False))))
    with pytest.raises(UnsupportedModelError) as info:
        vocab_from_tokenizer(tok)
    message = str(info.value)
    assert "none of the 13 llama.cpp types edgekit maps" in message
    assert "closest by behaviour: " in message and "first string that differs: " in message
    assert "\n" not in message


def test_wrong_type_fails_the_behaviour_check_with_the_first_differing_string(bpe_tokenizer):
    vocab = vocab_from_tokenizer(bpe_tokenizer, confirm=False)
    with pytest.raises(UnsupportedModelError, match=r"deepseek-coder pre-tokenizer does not reproduce .* gives"):
        confirm_vocab(bpe_tokenizer, replace(vocab, pre="deepseek-coder"))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda s: s.__setitem__("decoder", {"type": "Metaspace", "replacement": "▁"}), "mixes byte-level"),
        (lambda s: (s.__setitem__("pre_tokenizer", None), s.__setitem__("decoder", None)), "neither byte-level"),
        (
            _with_pre({"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False}),
            "llama.cpp only isolates",
        ),
        (_with_pre(lv._seq({"type": "WhitespaceSplit"}, lv._byte_level(False))), "WhitespaceSplit has no llama.cpp"),
    ],
)
def test_structures_llama_cpp_lacks_are_refused(bpe_tokenizer, edit, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        vocab_from_tokenizer(_edited(bpe_tokenizer, edit))


def test_vocabulary_that_aborts_llama_cpp_is_a_refusal_not_a_crash(bpe_tokenizer, tmp_path):
    """A byte-level vocabulary written as SentencePiece-style (the old bug) makes llama.cpp abort."""
    pytest.importorskip("llama_cpp")
    vocab = vocab_from_tokenizer(bpe_tokenizer, confirm=False)
    bad = replace(vocab, model="llama", pre=None, merges=[], scores=[0.0] * len(vocab.tokens))
    path = tmp_path / "bad.gguf"
    write_vocab_only(bad, path)
    from edgekit.isolate import run_isolated

    with pytest.raises(NativeCrash, match=r"bad\.gguf: the runtime crashed \(SIGABRT\)"):
        run_isolated(llama_tokenize, str(path), ["Hello, world!"], [], path=path)
    with pytest.raises(UnsupportedModelError, match=r"llama\.cpp cannot load this vocabulary"):
        confirm_vocab(bpe_tokenizer, bad)


def test_control_looking_added_tokens_are_controls_and_not_parsed_from_user_text(sp_tokenizer):
    """llama.cpp makes an added '</s>' a control by its text; the GGUF says so and parity follows it."""

    def edit(spec):
        for tok in spec["added_tokens"]:
            if tok["content"] == "</s>":
                tok["special"] = False

    tok = _edited(sp_tokenizer, edit, eos_token="</s>", unk_token="<unk>")
    vocab = vocab_from_tokenizer(tok)
    eos = tok.convert_tokens_to_ids("</s>")
    assert vocab.types[eos] == 3  # CONTROL
    assert "</s>" in LLAMA_CONTROL_TEXTS
    assert hf_ids(tok, ["a </s> b"], LLAMA_CONTROL_TEXTS)[0] != hf_ids(tok, ["a </s> b"])[0]


# ---- llama.cpp's own test vocabularies ---------------------------------------------------------------


@pytest.fixture(scope="session")
def vocab_folder():
    folder = lv.vocab_dir()
    if folder is None:
        pytest.skip("llama.cpp test vocabularies unavailable (set EDGEKIT_LLAMA_VOCAB_DIR, or allow PyPI access)")
    return folder


FAMILIES = sorted(lv.BYTE_LEVEL_FAMILIES) + sorted(lv.SPM_FAMILIES)


@pytest.mark.integration
@pytest.mark.parametrize("name", FAMILIES)
def test_published_vocabulary_exports_and_llama_cpp_tokenizes_as_hf(vocab_folder, tmp_path, name):
    pytest.importorskip("llama_cpp")
    tok = lv.hf_tokenizer(vocab_folder, name)
    pairs = lv.test_strings(vocab_folder, name)
    texts = [t for t, _ in pairs]
    # the rebuilt tokenizer is the published one: it gives the ids llama.cpp recorded from HF
    assert hf_ids(tok, texts) == [ids for _, ids in pairs]
    vocab = vocab_from_tokenizer(tok)
    expected = lv.BYTE_LEVEL_FAMILIES[name][2] if name in lv.BYTE_LEVEL_FAMILIES else {None}
    assert vocab.pre in expected
    path = tmp_path / "vocab.gguf"
    write_vocab_only(vocab, path)
    specials = added_tokens(tok)[:64]
    got, got_specials = llama_tokenize(str(path), texts + plain_texts(), [t for t, _ in specials])
    want = hf_ids(tok, texts + plain_texts(), LLAMA_CONTROL_TEXTS)
    assert got == want
    assert got_specials == [[i] for _, i in specials]


@pytest.mark.integration
def test_pruned_reindexed_published_vocabulary_exports(vocab_folder, tmp_path):
    """Qwen2's vocabulary with its merged tokens' ids shuffled still exports and tokenizes as HF does."""
    pytest.importorskip("llama_cpp")
    tok = lv.hf_tokenizer(vocab_folder, "qwen2")

    def edit(spec):
        vocab = spec["model"]["vocab"]
        ids = sorted(i for t, i in vocab.items() if len(t) > 1 and i < 150000)
        moved = dict(zip(ids, reversed(ids), strict=True))
        spec["model"]["vocab"] = {t: moved.get(i, i) for t, i in vocab.items()}

    shuffled = _edited(tok, edit)
    assert hf_ids(shuffled, ["Hello world"]) != hf_ids(tok, ["Hello world"])
    vocab = vocab_from_tokenizer(shuffled)
    path = tmp_path / "vocab.gguf"
    write_vocab_only(vocab, path)
    got, _ = llama_tokenize(str(path), plain_texts(), [])
    assert got == hf_ids(shuffled, plain_texts(), LLAMA_CONTROL_TEXTS)


@pytest.mark.integration
def test_real_qwen2_vocabulary_passes_the_verify_gate(vocab_folder, tmp_path):
    pytest.importorskip("llama_cpp")
    from edgekit.export.gguf import export_gguf
    from edgekit.export.verify import verify_artifact
    from edgekit.models import TinySpec, save_model, tiny_model

    tok = lv.hf_tokenizer(vocab_folder, "qwen2")
    spec = TinySpec(arch="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_layers=1)
    model_dir = save_model(tiny_model(spec), tok, tmp_path / "qwen2")
    (path,) = export_gguf(model_dir, tmp_path / "out", ["F32"], imatrix=None, progress=False)
    report = verify_artifact(path, model_dir, max_tokens=64)
    assert report.tokenizer_parity, report.tokenizer_mismatches
    assert report.passed, report.table()


@pytest.mark.parametrize("case", ["qwen2 (?i:) spelling", "smollm", "tekken"])
def test_emulated_confirmation_without_llama_cpp_accepts_and_refuses(bpe_tokenizer, monkeypatch, case):
    """Without llama-cpp-python the behaviour check runs llama.cpp's regexes in HF's engine."""
    import edgekit.export.gguf_vocab_check as check

    monkeypatch.setattr(check, "_try_llama", lambda *a: (None, None, ""))
    pre, expected = HAND_MADE[case]
    tok = _edited(bpe_tokenizer, _with_pre(pre))
    vocab = vocab_from_tokenizer(tok)
    assert vocab.pre == expected
    with pytest.raises(UnsupportedModelError, match="emulated with HF's engine"):
        confirm_vocab(tok, replace(vocab, pre="deepseek-coder"))


@pytest.mark.integration
def test_export_verification_survives_a_runtime_abort_and_moves_the_file_aside(
    tiny_llama_dir, bpe_tokenizer, tmp_path, monkeypatch
):
    """`edgekit export`'s verification: llama.cpp aborting on a file is a failed check, not a dead CLI."""
    pytest.importorskip("llama_cpp")
    import edgekit.export.gguf as gguf_export
    from edgekit.cli.export import _verify_all
    from edgekit.errors import VerificationError

    good = vocab_from_tokenizer(bpe_tokenizer, confirm=False)
    bad = replace(good, model="llama", pre=None, merges=[], scores=[0.0] * len(good.tokens))
    monkeypatch.setattr(gguf_export, "vocab_from_tokenizer", lambda tok, **kw: bad)  # the old bug, forced
    (path,) = gguf_export.export_gguf(tiny_llama_dir, tmp_path / "out", ["F32"], progress=False)
    with pytest.raises(VerificationError) as info:
        _verify_all([path], tiny_llama_dir, None, ["F32"], 64)
    assert "the runtime crashed (SIGABRT)" in "\n".join(info.value.lines())
    assert not path.exists() and path.with_name(path.name + ".rejected").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name + ".rejected", path.name + ".rejected.json"]
