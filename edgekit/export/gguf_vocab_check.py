"""Confirm by behaviour, before anything is written, that a GGUF vocabulary tokenizes as HF does.

The structure match in ``gguf_tokenizer`` says which llama.cpp pre-tokenizer the tokenizer.json
*means*; llama.cpp's regex engine and tokenizer are still different code from HF's. So the
vocabulary is tried on a stress set first:

* with llama-cpp-python installed, for real: the vocabulary alone is written to a temporary GGUF,
  loaded ``vocab_only`` by llama.cpp in a child process (``edgekit.isolate``: a vocabulary that
  makes llama.cpp abort is a refusal, not a crash), and every stress string is tokenized as
  edgekit's runtime tokenizes user text (control tokens not parsed), every added/special token on
  its own with special parsing on;
* without it, emulated: HF's own engine runs with the llama.cpp type's regexes (or, for the
  SentencePiece-style family, llama.cpp's whole-text ``▁`` handling) in place of the tokenizer's.

A mismatch refuses the tokenizer, naming the type tried, the closest type, and the first string
that differs.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from edgekit.errors import NativeCrash, UnsupportedModelError
from edgekit.export.gguf_pretok import PRE_TYPES, PreType, pre_type
from edgekit.export.stress import PRETOKENIZER_TEXTS, STRESS_TEXTS


def plain_texts() -> list[str]:
    """The strings every exported vocabulary must tokenize exactly as HF does."""
    return [*STRESS_TEXTS, *PRETOKENIZER_TEXTS]


def added_tokens(tokenizer) -> list[tuple[str, int]]:
    """(text, id) of every added token (special or not): each must come out as that one id."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return sorted(((str(tok), int(i)) for i, tok in decoder.items()), key=lambda p: p[1])


def hf_ids(tokenizer, texts: list[str], controls=(), add_special_tokens: bool = False) -> list[list[int]]:
    """HF ids of user text, special-token text not parsed (as edgekit's runtime does).

    ``controls``: texts of non-special added tokens the runtime treats as control tokens too
    (llama.cpp's end-of-generation texts, ``LLAMA_CONTROL_TEXTS``): not parsed either.
    """
    extra = {t for t, _ in added_tokens(tokenizer)} & set(controls)
    if not extra:
        kw = {"add_special_tokens": add_special_tokens, "split_special_tokens": True}
        return [list(tokenizer(t, **kw)["input_ids"]) for t in texts]
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    for tok in spec.get("added_tokens", []):
        tok["special"] = tok["special"] or tok["content"] in extra
    backend = Tokenizer.from_str(json.dumps(spec))
    backend.encode_special_tokens = True
    return [backend.encode(t, add_special_tokens=add_special_tokens).ids for t in texts]


_CONFIRMED: set[str] = set()  # keys of (tokenizer, vocabulary) pairs already confirmed in this process


def confirm_vocab(tokenizer, vocab) -> None:
    """Raise UnsupportedModelError unless ``vocab`` reproduces ``tokenizer`` on the stress set.

    A pair already confirmed in this process is not checked again (an export writes one
    vocabulary per level; a large one takes seconds to confirm).
    """
    import hashlib

    from edgekit.export.gguf_tokenizer import LLAMA_CONTROL_TEXTS

    key = hashlib.sha256(
        "\0".join([tokenizer.backend_tokenizer.to_str(), vocab.model, str(vocab.pre), str(vocab.space_prefix)]).encode()
    ).hexdigest()
    if key in _CONFIRMED:
        return
    _confirm(tokenizer, vocab, LLAMA_CONTROL_TEXTS)
    _CONFIRMED.add(key)


def _confirm(tokenizer, vocab, controls) -> None:

    texts = plain_texts()
    want = hf_ids(tokenizer, texts, controls)
    specials = added_tokens(tokenizer)
    got, got_specials, how = _try_llama(vocab, texts, specials)
    if got is None:
        got, how = _emulate(tokenizer, vocab, texts), "emulated with HF's engine"
        got_specials = [[i] for _, i in specials]  # the emulation parses added tokens as HF does
    family = f"llama.cpp's {vocab.pre} pre-tokenizer" if vocab.pre else "llama.cpp's SentencePiece-style BPE"
    for (text, idx), ids in zip(specials, got_specials or [], strict=False):
        if ids != [idx]:
            raise UnsupportedModelError(
                f"in llama.cpp the added token {text!r} does not come out as its id {idx} (got {ids[:8]}); "
                "its GGUF would not follow the HF tokenizer's special tokens"
            )
    for text, a, b in zip(texts, want, got or [], strict=False):
        if a != b:
            closest = closest_type(tokenizer) if vocab.pre else ""
            raise UnsupportedModelError(
                f"{family} does not reproduce this tokenizer ({how}): {text[:60]!r} gives {b[:10]} "
                f"instead of {a[:10]}; its GGUF would tokenize differently" + (f"; {closest}" if closest else "")
            )


def closest_type(tokenizer) -> str:
    """Which llama.cpp type comes nearest by behaviour, and the first stress string it gets wrong."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    texts = plain_texts()
    want = hf_ids(tokenizer, texts)
    best: tuple[int, PreType, str | None] | None = None
    for pre in PRE_TYPES:
        got = _emulated_ids(spec, texts, pre)
        if got is None:
            continue
        same = [a == b for a, b in zip(want, got, strict=True)]
        first = next((t for t, ok in zip(texts, same, strict=True) if not ok), None)
        if best is None or sum(same) > best[0]:
            best = (sum(same), pre, first)
    if best is None:
        return "no llama.cpp type comes close"
    score, pre, first = best
    where = f"first string that differs: {first[:60]!r}" if first else "no stress string differs"
    return f"closest by behaviour: {pre.name} ({score}/{len(texts)} stress strings agree; {where})"


# ---- emulation in HF's engine --------------------------------------------------------------------


def _emulate(tokenizer, vocab, texts: list[str]) -> list[list[int]]:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    got = _emulated_ids(spec, texts, pre_type(vocab.pre) if vocab.pre else None, vocab.space_prefix)
    if got is None:
        raise UnsupportedModelError(f"llama.cpp's {vocab.pre} regexes could not be tried on this tokenizer")
    return got


def _emulated_ids(
    spec: dict[str, Any], texts: list[str], pre: PreType | None, space_prefix: bool = False
) -> list[list[int]] | None:
    """Ids from the tokenizer's own vocabulary and merges, split as llama.cpp would split the text."""
    from tokenizers import Tokenizer

    spec = copy.deepcopy(spec)
    if pre is not None:
        steps = [
            {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False} for r in pre.regexes
        ]
        steps.append({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False})
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps}
        spec["model"]["ignore_merges"] = pre.ignore_merges
    else:  # llama.cpp's SPM: optional leading ▁, spaces to ▁, merges over the whole text
        norm = [{"type": "Prepend", "prepend": "▁"}] if space_prefix else []
        norm.append({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})
        spec["normalizer"] = {"type": "Sequence", "normalizers": norm}
        spec["pre_tokenizer"] = None
    spec["post_processor"] = None
    try:
        tok = Tokenizer.from_str(json.dumps(spec))
    except Exception:  # a regex HF's engine cannot compile (llama.cpp's engine is laxer)
        return None
    tok.encode_special_tokens = True
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


def _isolated(regex: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


# ---- the real thing: llama.cpp on a vocabulary-only GGUF ---------------------------------------


def _try_llama(vocab, texts: list[str], specials: list[tuple[str, int]]):
    """(plain ids, special ids, how) from llama.cpp itself, or (None, None, "") without llama-cpp-python."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None, None, ""
    from edgekit.isolate import run_isolated

    with tempfile.TemporaryDirectory(prefix="edgekit-vocab-") as tmp:
        path = Path(tmp) / "vocab.gguf"
        write_vocab_only(vocab, path)
        try:
            plain, special = run_isolated(
                llama_tokenize,
                str(path),
                texts,
                [t for t, _ in specials],
                path=path,
                action="loading the vocabulary and tokenizing the stress set",
            )
        except NativeCrash as exc:
            raise UnsupportedModelError(
                f"llama.cpp cannot load this vocabulary as {vocab.model}/{vocab.pre or 'spm'}: {exc.problem}"
            ) from None
    return plain, special, "in llama.cpp"


def write_vocab_only(vocab, path: Path) -> None:
    """A GGUF holding only ``vocab`` and the hyper-parameters llama.cpp's loader requires."""
    import gguf

    from edgekit.export.gguf_tokenizer import write_vocab

    writer = gguf.GGUFWriter(path, "llama")
    for key, value in (("block_count", 1), ("context_length", 4096), ("embedding_length", 64)):
        writer.add_uint32(f"llama.{key}", value)
    writer.add_uint32("llama.feed_forward_length", 128)
    writer.add_uint32("llama.attention.head_count", 1)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    write_vocab(writer, vocab)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_tokenize(path: str, texts: list[str], specials: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Run in a child: user-text ids of ``texts`` and special-parsed ids of each of ``specials``."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    plain = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]
    special = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in specials]
    return plain, special
