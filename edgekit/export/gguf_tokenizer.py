"""Tokenizer metadata for GGUF, read from the Hugging Face tokenizer's own definition.

Two families are represented faithfully, chosen by the tokenizer's structure (``family_of``):
* byte-level BPE ("gpt2" in GGUF): tokens, types, merges, and the llama.cpp pre-tokenizer type
  whose regexes the tokenizer.json pre-tokenizer is (``gguf_pretok``) — never by hashing a known
  vocabulary — so custom-trained, pruned and re-indexed vocabularies export;
* SentencePiece-style BPE ("llama" in GGUF): tokens, scores (merge priority), types (byte tokens
  marked as bytes), the ``▁`` space prefix.
The result is then confirmed by behaviour (``gguf_vocab_check``) before anything is written.
Anything else fails with a one-line reason instead of writing a file that tokenizes differently:
other tokenizer models (WordPiece, Unigram), pre-tokenizers llama.cpp does not implement, and
normalizers it does not apply (NFC is accepted: llama.cpp skips it, which changes nothing for text
already in NFC, as nearly all text is). docs/export.md has the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from edgekit.errors import UnsupportedModelError
from edgekit.export.gguf_pretok import PRE_TYPE_NAMES, matching_types, structure_of

# llama.cpp token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# Texts llama.cpp's loader makes end-of-generation controls whatever type the file gives them
# (llama_vocab::impl::load in src/llama-vocab.cpp, its EOT and EOG lists). An added token with one
# of these texts is written as CONTROL, so the file states what llama.cpp will do with it anyway:
# it is not parsed out of user text (see docs/export.md, "Control tokens in user text").
LLAMA_CONTROL_TEXTS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<｜end▁of▁sentence｜>", "[e~[",
    }
)  # fmt: skip


@dataclass
class GGUFVocab:
    model: str  # "gpt2" | "llama"
    pre: str | None
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # bos/eos/pad/unk -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None
    space_prefix: bool = False  # SentencePiece-style: "▁" prepended to the text


def _flatten(part: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The steps of a normalizer / pre-tokenizer, Sequence or not."""
    if not part:
        return []
    if part["type"] == "Sequence":
        return [step for sub in part[key] for step in _flatten(sub, key)]
    return [part]


def _space_prefix(spec: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer prepends ``▁``; raise on normalizers llama.cpp lacks.

    Two spellings are understood: the normalizer Prepend("▁") + Replace(" ", "▁") (older
    conversions) and the Metaspace pre-tokenizer (newer ones).
    """
    prefix = False
    for step in _flatten(spec.get("normalizer"), "normalizers"):
        if step["type"] == "Prepend" and step.get("prepend") == "▁":
            prefix = True
        elif not (step["type"] == "Replace" and step["pattern"].get("String") == " " and step["content"] == "▁"):
            raise UnsupportedModelError(
                f"the tokenizer's normalizer step {step['type']} is not one llama.cpp applies "
                "(SentencePiece-style GGUF supports only the ▁ prefix and space replacement)"
            )
    for step in _flatten(spec.get("pre_tokenizer"), "pretokenizers"):
        if step["type"] == "Metaspace":
            prefix = prefix or step.get("prepend_scheme", "always") != "never"
    return prefix


def _post_adds(tokenizer) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS, observed on the tokenizer itself."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bool(ids) and ids[0] == bos and bos is not None, bool(ids) and ids[-1] == eos and eos is not None


def _merge_scores(tokens: list[str], types: list[int], merges: list[str]) -> list[float]:
    """SentencePiece-style scores from BPE merge priority: the token the r-th merge makes scores -r.

    llama.cpp's SPM tokenizer merges the adjacent pair whose joined token scores highest, which is
    the HF BPE order when scores follow merge rank (and not token ids, which a pruned or re-indexed
    vocabulary may have shuffled). Tokens no merge makes (single characters, bytes, specials) score 0.
    """
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", "", 1), r)
    return [-float(rank[t]) if types[i] == NORMAL and t in rank else 0.0 for i, t in enumerate(tokens)]


def tokenizer_spec(tokenizer) -> dict[str, Any]:
    """The tokenizer.json of a fast HF tokenizer, parsed (or raise UnsupportedModelError)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError("only fast (tokenizer.json) tokenizers can be exported to GGUF")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise UnsupportedModelError(f"tokenizer model {spec['model']['type']!r} is not supported (BPE only)")
    return spec


def family_of(spec: dict[str, Any]) -> str:
    """ "byte-level" or "sentencepiece", from the tokenizer's structure (never from one flag).

    Byte-level: a ByteLevel pre-tokenizer or decoder (text is UTF-8 bytes mapped to printable
    characters). SentencePiece-style: spaces become ``▁`` (Metaspace, or a normalizer replacing " "
    with "▁", or a decoder turning "▁" back into " "). ``byte_fallback`` says nothing about
    either: byte-level vocabularies sometimes set it too.
    """
    pre = _flatten(spec.get("pre_tokenizer"), "pretokenizers")
    dec = _flatten(spec.get("decoder"), "decoders")
    norm = _flatten(spec.get("normalizer"), "normalizers")
    byte_level = any(s["type"] == "ByteLevel" for s in pre + dec)
    spm = (
        any(s["type"] == "Metaspace" for s in pre + dec)
        or any(s["type"] == "Replace" and s.get("content") == "▁" for s in norm)
        or any(s["type"] == "Replace" and s.get("pattern", {}).get("String") == "▁" for s in dec)
    )
    if byte_level and spm:
        raise UnsupportedModelError(
            "the tokenizer mixes byte-level (ByteLevel) and SentencePiece-style (▁ for spaces) steps; "
            "llama.cpp implements each alone"
        )
    if not (byte_level or spm):
        raise UnsupportedModelError(
            "the tokenizer is neither byte-level BPE (a ByteLevel pre-tokenizer or decoder) nor "
            "SentencePiece-style BPE (▁ for spaces); llama.cpp implements only these two BPE families"
        )
    return "byte-level" if byte_level else "sentencepiece"


def vocab_from_tokenizer(tokenizer, *, confirm: bool = True) -> GGUFVocab:
    """Read a fast HF tokenizer into GGUF vocabulary metadata (or raise UnsupportedModelError).

    The family and the pre-tokenizer type come from the tokenizer's structure; with ``confirm``
    the result is then checked by behaviour (``gguf_vocab_check.confirm_vocab``): the ids it gives
    must be the HF tokenizer's on a stress set, before anything is written.
    """
    spec = tokenizer_spec(tokenizer)
    model = spec["model"]
    size = len(tokenizer)
    tokens = [""] * size
    for text, idx in {**model["vocab"], **{t["content"]: t["id"] for t in spec.get("added_tokens", [])}}.items():
        if idx < size:
            tokens[idx] = text
    holes = [i for i, t in enumerate(tokens) if not t]
    if holes:
        raise UnsupportedModelError(f"the vocabulary has {len(holes)} holes (ids without a token, first: {holes[0]})")
    added_ids = {t["id"] for t in spec.get("added_tokens", [])}
    special_ids = {
        t["id"] for t in spec.get("added_tokens", []) if t.get("special") or t["content"] in LLAMA_CONTROL_TEXTS
    }
    add_bos, add_eos = _post_adds(tokenizer)
    special = {name: getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad", "unk")}
    common = dict(
        special={k: v for k, v in special.items() if v is not None},
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
    )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if family_of(spec) == "sentencepiece":
        types = []
        for i, t in enumerate(tokens):
            if i in special_ids:
                types.append(UNKNOWN if t == tokenizer.unk_token else CONTROL)
            elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types.append(BYTE)
            else:
                types.append(USER_DEFINED if i in added_ids else NORMAL)
        scores = _merge_scores(tokens, types, merges)
        vocab = GGUFVocab("llama", None, tokens, types, scores=scores, space_prefix=_space_prefix(spec), **common)
    else:
        types = [CONTROL if i in special_ids else USER_DEFINED if i in added_ids else NORMAL for i in range(size)]
        vocab = GGUFVocab("gpt2", _byte_level_pre(spec, tokenizer), tokens, types, merges=merges, **common)
    if confirm:
        from edgekit.export.gguf_vocab_check import confirm_vocab

        confirm_vocab(tokenizer, vocab)
    return vocab


def _byte_level_pre(spec: dict[str, Any], tokenizer) -> str:
    """The llama.cpp pre-tokenizer type whose structure the tokenizer's is (or raise, naming the closest)."""
    unsupported = [n["type"] for n in _flatten(spec.get("normalizer"), "normalizers") if n["type"] != "NFC"]
    if unsupported:  # NFC: llama.cpp skips it, which changes nothing for text already in NFC
        raise UnsupportedModelError(
            f"the tokenizer normalizes text with {', '.join(unsupported)}, which llama.cpp does not apply; "
            "its GGUF would tokenize differently"
        )
    structure = structure_of(spec.get("pre_tokenizer"))
    if structure.prefix_space:
        raise UnsupportedModelError(
            "the tokenizer's ByteLevel pre-tokenizer adds a prefix space, which llama.cpp's byte-level BPE "
            "does not; its GGUF would tokenize differently"
        )
    ignore_merges = bool(spec["model"].get("ignore_merges"))
    clean = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    found = matching_types(structure, ignore_merges, clean)
    if found:
        return found[0].name
    from edgekit.export.gguf_vocab_check import closest_type

    raise UnsupportedModelError(
        f"the tokenizer's pre-tokenizer (splits: {list(structure.regexes) or 'none'}) is none of the "
        f"{len(PRE_TYPE_NAMES)} llama.cpp types edgekit maps ({', '.join(PRE_TYPE_NAMES)}); " + closest_type(tokenizer)
    )


def pad_vocab(vocab: GGUFVocab, size: int) -> GGUFVocab:
    """Extend the vocabulary to the model's embedding rows (llama.cpp needs one token per row).

    Models often have more rows than tokens (rounded up for speed); the extra ids are never produced
    by the tokenizer, so they get placeholder names and the UNUSED type.
    """
    extra = size - len(vocab.tokens)
    if extra <= 0:
        return vocab
    names = [f"[PAD{i}]" for i in range(len(vocab.tokens), size)]
    scores = None if vocab.scores is None else [*vocab.scores, *([0.0] * extra)]
    return replace(vocab, tokens=[*vocab.tokens, *names], types=[*vocab.types, *([UNUSED] * extra)], scores=scores)


def write_vocab(writer, vocab: GGUFVocab) -> None:
    """Add the vocabulary's keys to a gguf.GGUFWriter."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for name, idx in vocab.special.items():
        getattr(writer, f"add_{name}_token_id")(idx)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.model == "llama":
        writer.add_add_space_prefix(vocab.space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
