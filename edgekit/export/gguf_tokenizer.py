"""Tokenizer metadata for GGUF, read from the Hugging Face tokenizer's own definition.

Two families are represented faithfully:
* byte-level BPE ("gpt2" in GGUF): tokens, types, merges, and the pre-tokenizer type, decided from
  the tokenizer.json pre-tokenizer (its split regex) — never by hashing a known vocabulary — so
  custom-trained and pruned vocabularies export;
* SentencePiece-style BPE with byte fallback ("llama" in GGUF): tokens, scores (merge priority),
  types (byte tokens marked as bytes).
Anything else fails with a message saying why, instead of writing a file that tokenizes differently:
other tokenizer models (WordPiece, Unigram), pre-tokenizers llama.cpp does not implement, and
normalizers it does not apply (NFC is accepted: llama.cpp skips it, which changes nothing for text
already in NFC, as nearly all text is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from edgekit.errors import UnsupportedModelError

# llama.cpp token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Split regexes of the byte-level pre-tokenizers llama.cpp implements, by its pre-type name.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_TYPES_BY_REGEX = {
    _GPT2_REGEX: "gpt-2",  # GPT-2, and ByteLevel(use_regex=True)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",  # Llama 3  # noqa: E501
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",  # Qwen2  # noqa: E501
}


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


def _split_regexes(pre: dict[str, Any] | None) -> list[str]:
    """Every regex the pre-tokenizer splits with; ByteLevel(use_regex) counts as the GPT-2 one."""
    if not pre:
        return []
    if pre["type"] == "Sequence":
        return [r for p in pre["pretokenizers"] for r in _split_regexes(p)]
    if pre["type"] == "Split":
        pattern = pre["pattern"]
        return [pattern.get("Regex") or pattern.get("String")]
    if pre["type"] == "ByteLevel":
        return [_GPT2_REGEX] if pre.get("use_regex", True) else []
    return [f"<{pre['type']}>"]


def _flatten(part: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The steps of a normalizer / pre-tokenizer, Sequence or not."""
    if not part:
        return []
    if part["type"] == "Sequence":
        return [step for sub in part[key] for step in _flatten(sub, key)]
    return [part]


def _check_byte_level_normalizer(normalizer: dict[str, Any] | None) -> None:
    steps = [n["type"] for n in _flatten(normalizer, "normalizers")]
    unsupported = [t for t in steps if t != "NFC"]
    if unsupported:
        raise UnsupportedModelError(
            f"the tokenizer normalizes text with {', '.join(unsupported)}, which llama.cpp does not apply; "
            "its GGUF would tokenize differently"
        )


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


def _byte_level_pre_type(pre: dict[str, Any] | None) -> str:
    prefixed = [p for p in _flatten(pre, "pretokenizers") if p["type"] == "ByteLevel" and p.get("add_prefix_space")]
    if prefixed:
        raise UnsupportedModelError(
            "the tokenizer's ByteLevel pre-tokenizer adds a prefix space, which llama.cpp's byte-level BPE "
            "does not; its GGUF would tokenize differently"
        )
    regexes = _split_regexes(pre)
    if len(regexes) != 1 or regexes[0] not in PRE_TYPES_BY_REGEX:
        raise UnsupportedModelError(
            f"the tokenizer's pre-tokenizer (splits: {regexes or 'none'}) matches none llama.cpp implements "
            f"({', '.join(sorted(set(PRE_TYPES_BY_REGEX.values())))}); its GGUF would tokenize differently"
        )
    return PRE_TYPES_BY_REGEX[regexes[0]]


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


def vocab_from_tokenizer(tokenizer) -> GGUFVocab:
    """Read a fast HF tokenizer into GGUF vocabulary metadata (or raise UnsupportedModelError)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError("only fast (tokenizer.json) tokenizers can be exported to GGUF")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE":
        raise UnsupportedModelError(f"tokenizer model {model['type']!r} is not supported (BPE only)")
    size = len(tokenizer)
    tokens = [""] * size
    for text, idx in {**model["vocab"], **{t["content"]: t["id"] for t in spec.get("added_tokens", [])}}.items():
        if idx < size:
            tokens[idx] = text
    if any(not t for t in tokens):
        raise UnsupportedModelError("the vocabulary has holes (ids without a token)")
    special_ids = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    added_ids = {t["id"] for t in spec.get("added_tokens", [])}
    add_bos, add_eos = _post_adds(tokenizer)
    special = {name: getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad", "unk")}
    common = dict(
        special={k: v for k, v in special.items() if v is not None},
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
    )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if model.get("byte_fallback"):
        types = []
        for i, t in enumerate(tokens):
            if i in special_ids:
                types.append(UNKNOWN if t == tokenizer.unk_token else CONTROL)
            elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types.append(BYTE)
            else:
                types.append(USER_DEFINED if i in added_ids else NORMAL)
        scores = _merge_scores(tokens, types, merges)
        return GGUFVocab("llama", None, tokens, types, scores=scores, space_prefix=_space_prefix(spec), **common)
    _check_byte_level_normalizer(spec.get("normalizer"))
    pre = _byte_level_pre_type(spec.get("pre_tokenizer"))
    if model.get("ignore_merges") and pre != "llama-bpe":
        raise UnsupportedModelError(f"ignore_merges is implemented by llama.cpp only for llama-bpe, not {pre}")
    types = [CONTROL if i in special_ids else USER_DEFINED if i in added_ids else NORMAL for i in range(size)]
    return GGUFVocab("gpt2", pre, tokens, types, merges=merges, **common)


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
