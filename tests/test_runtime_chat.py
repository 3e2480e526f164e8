"""Chat templates: found in folders and GGUF metadata, rendered like transformers."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import InputError
from edgekit.runtime.chat import ChatFormat, folder_chat_format, gguf_chat_format, render_chat
from edgekit.runtime.meta import folder_eos_ids, gguf_metadata
from edgekit.tokenizer import CHAT_TEMPLATE

MESSAGES = [{"role": "user", "content": "hi"}]


def test_render_chat_matches_transformers_when_template_uses_bos(bpe_tokenizer):
    template = "{{ bos_token }}" + CHAT_TEMPLATE
    fmt = ChatFormat(template, bpe_tokenizer.bos_token, bpe_tokenizer.eos_token)
    expected = bpe_tokenizer.apply_chat_template(
        MESSAGES, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    assert render_chat(MESSAGES, fmt) == expected == "<|bos|><|user|>\nhi<|end|>\n<|assistant|>\n"


def test_render_chat_raises_input_error_when_message_lacks_content():
    with pytest.raises(InputError, match=r"messages\[0\]"):
        render_chat([{"role": "user"}], ChatFormat())


def test_folder_chat_format_reads_tokenizer_config_when_saved_by_transformers(tiny_llama_dir):
    fmt = folder_chat_format(tiny_llama_dir)
    assert fmt.template and "add_generation_prompt" in fmt.template
    assert (fmt.bos_token, fmt.eos_token) == ("<|bos|>", "<|eos|>")
    assert folder_eos_ids(tiny_llama_dir) == [json.loads((tiny_llama_dir / "config.json").read_text())["eos_token_id"]]


def test_gguf_chat_format_reads_metadata_when_file_has_template(tmp_path):
    import gguf

    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "a"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_chat_format(path) == ChatFormat(CHAT_TEMPLATE, "<s>", "</s>")
    assert gguf_metadata(path)["eos_token_ids"] == [2]


def test_gguf_chat_format_is_plain_when_file_is_unreadable(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF")
    assert gguf_chat_format(path) == ChatFormat()
