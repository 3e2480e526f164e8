"""llama.cpp's byte-level pre-tokenizer types, and which tokenizer.json structure each one is.

llama.cpp does not run a tokenizer.json: it knows a fixed set of pre-tokenizer types by name
(``tokenizer.ggml.pre``), each a list of regexes applied in turn (every regex splits every piece
so far; matched and unmatched text both become pieces, as HF's ``Split(behavior="isolated")``),
followed by GPT-2's byte-to-unicode mapping. A Hugging Face tokenizer says the same thing as a
``pre_tokenizer`` structure (Sequence, Split, ByteLevel with or without its regex, Digits,
Punctuation). ``structure_of`` turns that structure into the same form — a list of regexes on raw
text — and ``canonical`` rewrites equivalent spellings to one, so the two can be compared.

The table below is a fact table: each line is one llama.cpp type, its regexes as the constructor
of ``llm_tokenizer_bpe`` lists them (src/llama-vocab.cpp, llama.cpp as vendored in
llama-cpp-python 0.3.36) and its loader flags (``ignore_merges``, ``clean_spaces``) from
``llama_vocab::impl::load``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgekit.errors import UnsupportedModelError

# The contraction alternation, in the two spellings seen in tokenizer.json files and llama.cpp.
_CONTRACTIONS_I = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+" + _CONTRACTIONS + "?"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*" + _CONTRACTIONS + "?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEEPSEEK_LLM = (
    r"[\r\n]",
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
)
DEEPSEEK_CODER = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}")
DEEPSEEK_V3 = (
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
)
# HF's Punctuation pre-tokenizer splits on Unicode P* and on ASCII punctuation, which includes
# the ASCII symbols $+<=>^~|` (Unicode S*): llama.cpp spells that out.
PUNCT = r"[\p{P}\$\+<=>\^~\|`]"
FALCON = (PUNCT + "+", GPT2, r"[0-9][0-9][0-9]")


@dataclass(frozen=True)
class PreType:
    """One llama.cpp byte-level pre-tokenizer type."""

    name: str  # tokenizer.ggml.pre
    regexes: tuple[str, ...]  # as llama.cpp applies them, in order, before byte encoding
    ignore_merges: bool  # llama.cpp looks a whole piece up in the vocabulary before merging
    clean_spaces: bool  # llama.cpp removes spaces before punctuation when decoding
    also: tuple[tuple[str, ...], ...] = ()  # other tokenizer.json structures that mean this type


# Ties (same regexes and flags) resolve to the first line, so preferred names come first.
PRE_TYPES: tuple[PreType, ...] = (
    PreType("gpt-2", (GPT2,), False, True),  # GPT-2, Phi-2, OLMo ("olmo" and "mpt" are the same)
    PreType("llama-bpe", (LLAMA3,), True, True),  # Llama 3.x
    PreType("dbrx", (LLAMA3,), False, True),  # the Llama 3 regex without ignore_merges (DBRX, GLM-4)
    PreType("qwen2", (QWEN2,), False, False),  # Qwen1.5/2/2.5/3, DeepSeek-R1-Distill-Qwen
    PreType("qwen35", (QWEN35,), False, False),  # Qwen3.5
    PreType("smollm", (r"\p{N}", GPT2), False, False),  # SmolLM (Digits + ByteLevel), command-r
    PreType("starcoder", (r"\p{N}", GPT2), False, True),  # StarCoder, refact
    PreType("deepseek-llm", DEEPSEEK_LLM, False, False),  # DeepSeek LLM 7B/67B
    PreType("deepseek-coder", DEEPSEEK_CODER, False, False),  # DeepSeek Coder 1.x
    PreType("deepseek-v3", DEEPSEEK_V3, False, False),  # DeepSeek V3 / R1
    # Falcon's tokenizer.json also has Digits(individual_digits=false) after ByteLevel; llama.cpp
    # leaves it out (ByteLevel's regex has already split digit runs from letters)
    PreType("falcon", FALCON, False, True, also=((PUNCT + "+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),)),
    PreType("tekken", (TEKKEN,), True, False),  # Mistral Nemo, Ministral, Pixtral
    PreType("gpt-4o", (GPT4O,), False, False),  # Phi-4, Llama 4
)
PRE_TYPE_NAMES = tuple(p.name for p in PRE_TYPES)


def canonical(regex: str) -> str:
    """One spelling for regexes that split text identically.

    Rewrites the case-insensitive contraction group as its case-expanded form, literal CR/LF/TAB
    as escapes, ``X{1}`` as ``X``, and drops a final ``|\\s+`` after ``|\\s+(?!\\S)`` (what it
    would match, whitespace before a non-space character no other branch takes, becomes a
    piece of its own anyway, since llama.cpp and HF's isolated Split both keep unmatched text).
    """
    regex = regex.replace(_CONTRACTIONS_I, _CONTRACTIONS)
    regex = regex.replace("\r", r"\r").replace("\n", r"\n").replace("\t", r"\t")
    regex = regex.replace(r"\p{N}{1}", r"\p{N}")
    regex = re.sub(r"\|\\s\+\(\?!\\S\)\|\\s\+$", r"|\\s+(?!\\S)", regex)
    return regex


@dataclass(frozen=True)
class Structure:
    """A tokenizer.json pre-tokenizer as llama.cpp would state it."""

    regexes: tuple[str, ...]  # canonical, in order
    byte_level: bool  # a ByteLevel step maps bytes to GPT-2's printable characters
    prefix_space: bool  # ByteLevel(add_prefix_space=True): llama.cpp has no such step


def structure_of(pre: dict[str, Any] | None) -> Structure:
    """The pre-tokenizer as regexes on raw text; raise for steps llama.cpp has no counterpart for."""
    regexes: list[str] = []
    byte_level = prefix = False
    for step in _steps(pre):
        kind = step["type"]
        if kind == "ByteLevel":
            byte_level = True
            prefix = prefix or bool(step.get("add_prefix_space"))
            if step.get("use_regex", True):
                regexes.append(GPT2)
        elif kind == "Split":
            pattern = step["pattern"]
            regex = pattern.get("Regex") if "Regex" in pattern else re.escape(pattern["String"])
            if step.get("behavior", "Isolated").lower() != "isolated" or step.get("invert"):
                raise UnsupportedModelError(
                    f"the tokenizer's pre-tokenizer splits on {regex!r} with behavior {step.get('behavior')}"
                    f"{' (inverted)' if step.get('invert') else ''}; llama.cpp only isolates matches"
                )
            regexes.append(regex)
        elif kind == "Digits":
            regexes.append(r"\p{N}" if step.get("individual_digits") else r"\p{N}+")
        elif kind == "Punctuation":
            behavior = step.get("behavior", "Isolated").lower()
            if behavior not in ("isolated", "contiguous"):
                raise UnsupportedModelError(f"the tokenizer splits punctuation with behavior {behavior}")
            regexes.append(PUNCT + ("+" if behavior == "contiguous" else ""))
        else:
            raise UnsupportedModelError(f"the tokenizer's pre-tokenizer step {kind} has no llama.cpp counterpart")
    return Structure(tuple(canonical(r) for r in regexes), byte_level, prefix)


def _steps(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pre:
        return []
    if pre["type"] == "Sequence":
        return [s for p in pre["pretokenizers"] for s in _steps(p)]
    return [pre]


def matching_types(structure: Structure, ignore_merges: bool, clean_spaces: bool) -> list[PreType]:
    """The llama.cpp types this structure is, best first (same flags first, then table order)."""
    found = [
        p
        for p in PRE_TYPES
        if any(structure.regexes == tuple(canonical(r) for r in form) for form in (p.regexes, *p.also))
    ]
    return sorted(found, key=lambda p: (p.ignore_merges != ignore_merges, p.clean_spaces != clean_spaces))


def pre_type(name: str) -> PreType:
    return next(p for p in PRE_TYPES if p.name == name)
