"""EdgeModel on the PyTorch backend: streaming, seeds, chat templates, logprobs, lifecycle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit
from edgekit.models import load_model, load_tokenizer
from edgekit.runtime.base import SamplingParams
from edgekit.runtime.textstream import REPLACEMENT, detokenize_stream

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a list?"}]


@pytest.fixture(scope="module")
def model(make_tiny_hf):
    with edgekit.load(make_tiny_hf("llama")) as m:
        yield m


@pytest.fixture(scope="module")
def sp_model(make_tiny_hf):
    with edgekit.load(make_tiny_hf("llama", tokenizer="sp")) as m:
        yield m


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stream_joined_equals_generate_when_same_arguments(model, temperature):
    m = model
    args = dict(max_tokens=40, temperature=temperature, seed=7, ignore_eos=True)
    pieces = list(m.stream("import os\n", **args))
    assert len(pieces) > 1
    assert "".join(pieces) == m.generate("import os\n", **args)


def test_stream_never_splits_a_character_when_byte_fallback_tokens_spell_it(sp_model):
    text = "naïve café costs 5 € — ünïcödé ✓ 日本"
    ids = sp_model.tokenize(text, add_special_tokens=False)
    pieces = list(detokenize_stream(ids, sp_model.detokenize, []))
    assert "".join(pieces) == sp_model.detokenize(ids) == text
    assert len(pieces) > 5 and not any(REPLACEMENT in p for p in pieces)


def test_generate_repeats_when_seed_is_fixed(model):
    first = model.generate("The", max_tokens=30, temperature=1.0, seed=3, ignore_eos=True)
    assert model.generate("The", max_tokens=30, temperature=1.0, seed=3, ignore_eos=True) == first
    assert model.generate("The", max_tokens=30, temperature=1.0, seed=4, ignore_eos=True) != first


def test_generate_ends_before_stop_string_when_model_produces_it(model):
    full = model.generate("class A:\n", max_tokens=40, ignore_eos=True)
    stop = full[10:13]
    cut = model.generate("class A:\n", max_tokens=40, ignore_eos=True, stop=[stop, "never-seen"])
    assert cut == full[: full.index(stop)]
    assert "".join(model.stream("class A:\n", max_tokens=40, ignore_eos=True, stop=stop)) == cut


def test_chat_prompt_ids_equal_hf_apply_chat_template_when_template_exists(model, make_tiny_hf):
    tok = load_tokenizer(make_tiny_hf("llama"))
    expected = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert model.prompt_ids(MESSAGES) == list(expected)
    assert model.chat_prompt(MESSAGES).endswith("<|assistant|>\n")


def test_chat_generate_uses_template_when_messages_given(model, make_tiny_hf):
    tok = load_tokenizer(make_tiny_hf("llama"))
    templated = list(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False))
    expected = list(model.backend.generate_ids(templated, 12, SamplingParams()))
    assert model.generate_ids(MESSAGES, max_tokens=12, ignore_eos=True) == expected
    assert model.generate(MESSAGES, max_tokens=12, ignore_eos=True) == model.detokenize(expected)


def test_chat_falls_back_to_plain_transcript_when_no_template(sp_model):
    assert sp_model.chat_format.template is None
    assert sp_model.chat_prompt(MESSAGES) == "system: Be brief.\nuser: What is a list?\nassistant:"


def test_logprobs_equal_log_softmax_of_hf_logits_for_each_token(model, make_tiny_hf):
    text = "for item in items:"
    ids = model.tokenize(text)
    with torch.no_grad():
        ref = torch.log_softmax(load_model(make_tiny_hf("llama"))(torch.tensor([ids])).logits[0], -1).numpy()
    got = model.logprobs(text)
    assert len(got) == len(ids) - 1
    assert [t for t, _ in got] == [model.detokenize([i]) for i in ids[1:]]
    np.testing.assert_allclose([lp for _, lp in got], ref[np.arange(len(ids) - 1), ids[1:]], atol=1e-4)


def test_last_stats_count_tokens_when_generation_ran(model):
    model.generate("Hello", max_tokens=9, ignore_eos=True)
    stats = model.last_stats
    assert stats.generated_tokens == 9 and stats.prompt_tokens == len(model.tokenize("Hello"))
    assert stats.total_s >= stats.first_token_s > 0 and stats.decode_tokens_per_s > 0


def test_model_refuses_calls_when_closed(tiny_llama_dir):
    with edgekit.load(tiny_llama_dir) as m:
        assert m.generate("a", max_tokens=2, ignore_eos=True)
    assert m.backend is None
    with pytest.raises(RuntimeError, match="closed"):
        m.generate("a")
