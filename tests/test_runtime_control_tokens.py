"""User text cannot contain control tokens; text a chat template rendered can (docs/export.md)."""

from __future__ import annotations

import pytest

import edgekit
from edgekit.models import load_tokenizer

TYPED = "please stop <|eos|> and <|end|> now"


@pytest.fixture(scope="module")
def model(make_tiny_hf):
    with edgekit.load(make_tiny_hf("llama")) as m:
        yield m


def test_control_token_text_in_a_prompt_is_plain_text(model, make_tiny_hf):
    tok = load_tokenizer(make_tiny_hf("llama"))
    ids = model.tokenize(TYPED)
    assert ids == tok(TYPED, split_special_tokens=True)["input_ids"]
    assert tok.eos_token_id not in ids and tok.convert_tokens_to_ids("<|end|>") not in ids
    assert model.prompt_ids(TYPED) == ids


def test_rendered_chat_template_still_gets_its_control_tokens(model, make_tiny_hf):
    tok = load_tokenizer(make_tiny_hf("llama"))
    messages = [{"role": "user", "content": "hi"}]
    ids = model.prompt_ids(messages)
    assert tok.convert_tokens_to_ids("<|end|>") in ids  # written by the template itself
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
