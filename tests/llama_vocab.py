"""llama.cpp's tokenizer test vocabularies as a test fixture, and HF tokenizers rebuilt from them.

llama.cpp ships ``models/ggml-vocab-<name>.gguf`` (a vocabulary without weights) with
``.inp``/``.out`` files: test strings, and the ids the original Hugging Face tokenizer gives each.
They are not committed here (75 MB); ``vocab_dir`` finds them in ``$EDGEKIT_LLAMA_VOCAB_DIR``, in
a cache folder, or fetches the llama-cpp-python sdist (which vendors llama.cpp) from PyPI once.

``hf_tokenizer(name)`` rebuilds the published tokenizer.json structure of that family around the
GGUF's tokens and merges; its faithfulness is checked against the ``.out`` ids by the tests.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import urllib.request
from pathlib import Path

GPT2_HF = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_TAIL_HF = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_HF = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _TAIL_HF
QWEN2_HF = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TAIL_HF
QWEN35_HF = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _digits(individual: bool) -> dict:
    return {"type": "Digits", "individual_digits": individual}


def _seq(*steps: dict) -> dict:
    return {"type": "Sequence", "pretokenizers": list(steps)}


# family -> (pre_tokenizer as the published tokenizer.json has it, ignore_merges, llama.cpp types it is)
BYTE_LEVEL_FAMILIES = {
    "gpt-2": (_byte_level(True), False, {"gpt-2"}),
    "mpt": (_byte_level(True), False, {"gpt-2"}),
    "llama-bpe": (_seq(_split(LLAMA3_HF), _byte_level(False)), True, {"llama-bpe"}),
    "qwen2": (_seq(_split(QWEN2_HF), _byte_level(False)), False, {"qwen2"}),
    "qwen35": (_seq(_split(QWEN35_HF), _byte_level(False)), False, {"qwen35"}),
    "starcoder": (_seq(_digits(True), _byte_level(True)), False, {"starcoder", "smollm"}),
    "refact": (_seq(_digits(True), _byte_level(True)), False, {"starcoder", "smollm"}),
    "command-r": (_seq(_digits(True), _byte_level(True)), False, {"starcoder", "smollm"}),
    "deepseek-coder": (
        _seq(
            _split("[\r\n]"),
            _split(r"\s?\p{L}+"),
            _split(r"\s?\p{P}+"),
            _split("[一-龥ࠀ-一가-퟿]+"),
            _digits(True),
            _byte_level(False),
        ),
        False,
        {"deepseek-coder"},
    ),
    "falcon": (
        _seq(
            {"type": "Punctuation", "behavior": "Contiguous"},
            _byte_level(True),
            _digits(False),
            _split("[0-9][0-9][0-9]"),
        ),
        False,
        {"falcon"},
    ),
}
SPM_FAMILIES = {"llama-spm", "phi-3"}


def vocab_dir() -> Path | None:
    """Folder holding ``ggml-vocab-*.gguf`` with ``.inp``/``.out``, or None if it cannot be had."""
    given = os.environ.get("EDGEKIT_LLAMA_VOCAB_DIR")
    if given and any(Path(given).glob("ggml-vocab-*.gguf")):
        return Path(given)
    version = _llama_version()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit-tests" / f"llama-vocab-{version}"
    if any(cache.glob("ggml-vocab-*.gguf.out")):
        return cache
    try:
        _fetch_from_sdist(version, cache)
    except Exception:
        return None
    return cache if any(cache.glob("ggml-vocab-*.gguf.out")) else None


def _llama_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:
        return "latest"


def _fetch_from_sdist(version: str, dest: Path) -> None:
    """The vocabularies from the llama-cpp-python sdist on PyPI (its vendor/llama.cpp/models)."""
    url = f"https://pypi.org/pypi/llama-cpp-python/{'' if version == 'latest' else version + '/'}json"
    with urllib.request.urlopen(url, timeout=30) as fh:
        meta = json.load(fh)
    sdist = next(u["url"] for u in meta["urls"] if u["packagetype"] == "sdist")
    with urllib.request.urlopen(sdist, timeout=300) as fh:
        data = fh.read()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/vendor/llama.cpp/models/" in member.name and name.startswith("ggml-vocab-") and member.isfile():
                (dest / name).write_bytes(tar.extractfile(member).read())


def test_strings(folder: Path, name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's (string, HF ids) pairs for one vocabulary."""
    sep = "\n__ggml_vocab_test__\n"
    texts = (folder / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split(sep)
    outs = (folder / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    texts[-1] = texts[-1].removesuffix("\n__ggml_vocab_test__\n").removesuffix("\n__ggml_vocab_test__")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs, strict=False)]


def _fields(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def hf_tokenizer(folder: Path, name: str):
    """A HF fast tokenizer with the family's published structure around the GGUF's vocabulary."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    f = _fields(folder / f"ggml-vocab-{name}.gguf")
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
        | {"special": types[i] == 3}
        for i, t in enumerate(tokens)
        if types[i] in (3, 4)
    ]
    if name in SPM_FAMILIES:
        spec = _spm_spec(tokens, types, f["tokenizer.ggml.scores"])
    else:
        pre, ignore_merges, _ = BYTE_LEVEL_FAMILIES[name]
        model = {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": list(f["tokenizer.ggml.merges"]),
        }
        spec = {"normalizer": None, "pre_tokenizer": pre, "model": model, "decoder": _byte_level(True)}
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, **spec}
    spec["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(spec))
    bos = f.get("tokenizer.ggml.bos_token_id")
    eos = f.get("tokenizer.ggml.eos_token_id")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=tokens[bos] if bos is not None else None,
        eos_token=tokens[eos] if eos is not None else None,
        clean_up_tokenization_spaces=False,
    )


def _spm_spec(tokens: list[str], types: list[int], scores: list[float]) -> dict:
    """Llama-2-style tokenizer.json: ▁ prefix and spaces, merges by the score of the merged piece."""
    index = {t: i for i, t in enumerate(tokens)}
    merges = []
    for i, t in enumerate(tokens):
        if types[i] != 1 or len(t) < 2:
            continue
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in index and right in index:
                merges.append((-scores[i], index[left], index[right], left, right))
    merges.sort()
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": "<unk>",
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": True,
        "byte_fallback": True,
        "ignore_merges": False,
        "vocab": index,
        "merges": [[m[3], m[4]] for m in merges],
    }
    normalizer = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    decoder = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    return {"normalizer": normalizer, "pre_tokenizer": None, "model": model, "decoder": decoder}
