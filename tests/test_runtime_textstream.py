"""Streaming text and stop strings, with a scripted fake backend so every piece boundary is known."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from edgekit.runtime.base import ModelInfo, SamplingParams
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.textstream import cut_at_stops, detokenize_stream

EOS = 0


class ScriptedBackend:
    """Token ids are byte values + 1 (0 is EOS); generation replays ``script`` whatever the prompt."""

    chat_template = None

    def __init__(self, script: bytes | Sequence[int]):
        self.script = [b + 1 for b in script] if isinstance(script, bytes) else list(script)
        self.info = ModelInfo("fake", "fake", "/nowhere", "none", 0, 0, 1024, 257)
        self.closed = False
        self.eos_token_ids = [EOS]

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [b + 1 for b in text.encode()]

    def detokenize(self, ids: Sequence[int]) -> str:
        return bytes(i - 1 for i in ids if i != EOS).decode("utf-8", errors="replace")

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return np.zeros((len(ids), 257), dtype=np.float32)

    def generate_ids(self, prompt_ids, max_tokens, sampling: SamplingParams, stop_ids=()) -> Iterator[int]:
        for token in self.script[:max_tokens]:
            if token in stop_ids:
                return
            yield token

    def close(self) -> None:
        self.closed = True


def test_detokenize_stream_holds_partial_utf8_when_character_spans_tokens():
    backend = ScriptedBackend("a€b日".encode())
    pieces = list(detokenize_stream(backend.script, backend.detokenize, []))
    assert pieces == ["a", "€", "b", "日"]


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hel", "lo ", "wo", "rld"], ["lo w"], ["Hel"]),
        (["ab", "c<", "/s", ">tail"], ["</s>"], ["ab", "c"]),
        (["no stop here"], ["zzz"], ["no stop here"]),
        (["xx", "STOP"], ["STOP", "xxS"], [""]),  # the earliest stop wins
        (["<", "<", "x"], ["<<<"], ["<<x"]),
    ],
)
def test_cut_at_stops_ends_before_stop_when_it_spans_pieces(pieces, stops, expected):
    assert "".join(cut_at_stops(pieces, stops)) == "".join(expected)


def test_cut_at_stops_streams_text_that_cannot_start_a_stop_right_away():
    source = iter(["abc", "def<", "/", "s>"])
    out = cut_at_stops(source, ["</s>"])
    assert next(out) == "abc"
    assert next(out) == "def"
    assert list(out) == []


def test_generate_stops_at_eos_unless_ignore_eos():
    script = [*b"hi", EOS, *b"more"]
    model = EdgeModel(ScriptedBackend([b + 1 if b != EOS else EOS for b in script]))
    assert model.generate("x") == "hi"
    assert model.generate("x", ignore_eos=True) == "himore"


def test_stream_and_generate_cut_stop_string_when_it_spans_tokens():
    model = EdgeModel(ScriptedBackend(b"answer: 42\nUser: again"))
    assert model.generate("q", stop="\nUser:") == "answer: 42"
    assert "".join(model.stream("q", stop=["\nUser:", "zz"])) == "answer: 42"
    assert model.generate("q", stop="42", max_tokens=10) == "answer: "
    assert model.generate("q", stop="42", max_tokens=9) == "answer: 4"  # a held partial stop is flushed at the end


def test_close_closes_backend_when_context_exits():
    backend = ScriptedBackend(b"x")
    with EdgeModel(backend) as model:
        assert model.generate("q") == "x"
    assert backend.closed
