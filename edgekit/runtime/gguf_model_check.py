"""Check a GGUF file's hyperparameters, vocabulary and tensor table against each other and llama.cpp.

``gguf_check`` proves the file is whole; this proves llama.cpp can build a model from it. llama.cpp
asserts rather than reports on many inconsistencies (``block_count`` above its 512-layer arrays, zero
head counts, a token id past the vocabulary), and an assert ends the whole process with SIGABRT. So
every fact llama.cpp relies on is checked here first, and each problem is named with its key.

Limits are llama.cpp's own: ``LLAMA_MAX_LAYERS`` in ``src/llama-hparams.h``; the per-block tensor names
are gguf-py's ``TENSOR_NAMES`` (``blk.{bid}.attn_q`` ...).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from edgekit.errors import InputError

LLAMA_MAX_LAYERS = 512  # llama.cpp src/llama-hparams.h: fixed-size per-layer arrays
MAX_CONTEXT = 1 << 24  # tokens; llama.cpp keeps n_ctx_train in a uint32, larger values are damage
# Dense decoder families whose every block has these tensors (llama.cpp builds them all the same way).
DENSE_ARCHS = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3", "phi3", "granite", "olmo2")
BLOCK_TENSORS = ("attn_output", "ffn_down", "ffn_up")  # plus q/k/v or fused qkv, plus one attention norm
# the attention norm sits before attention in most families, after it in OLMo 2 (post-norm only)
ATTENTION_NORMS = ("attn_norm", "post_attention_norm")
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.")
_INT_TYPES = ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64")
_SPECIAL_ID = re.compile(r"^tokenizer\.ggml\.\w+_token_id$")


class _Fields:
    """Typed access to a reader's key/value fields; problems are collected, not raised one by one."""

    def __init__(self, fields: dict):
        self.fields = fields
        self.problems: list[str] = []

    def kind(self, key: str) -> str | None:
        field = self.fields.get(key)
        return field.types[0].name if field is not None and field.types else None

    def integer(self, key: str, low: int, high: int, required: bool = True) -> int | None:
        """An integer scalar in [low, high], or None (with a problem recorded) when absent or wrong."""
        kind = self.kind(key)
        if kind is None:
            if required:
                self.problems.append(f"{key} is missing")
            return None
        if kind not in _INT_TYPES:
            self.problems.append(f"{key} must be an integer, found {kind.lower()}")
            return None
        value = int(self.fields[key].contents())
        if not low <= value <= high:
            self.problems.append(f"{key} is {value}, expected {low}..{high}")
            return None
        return value

    def number(self, key: str) -> None:
        """A positive finite float, when present (epsilons, rope bases)."""
        kind = self.kind(key)
        if kind is None:
            return
        if kind not in ("FLOAT32", "FLOAT64", *_INT_TYPES):
            self.problems.append(f"{key} must be a number, found {kind.lower()}")
        elif not (math.isfinite(value := float(self.fields[key].contents())) and value > 0):
            self.problems.append(f"{key} is {value}, expected a finite number > 0")

    def array_len(self, key: str) -> int | None:
        field = self.fields.get(key)
        if field is None:
            return None
        if self.kind(key) != "ARRAY":
            self.problems.append(f"{key} must be an array, found {self.kind(key).lower()}")
            return None
        return len(field.data)


def check_model_fields(path: Path, reader: Any) -> dict[str, Any]:
    """Validate hyperparameters, vocabulary and tensors; return ``{"architecture", "context_length", "n_vocab"}``.

    Raises one ``InputError`` listing every problem found (``key: problem; key: problem``).
    """
    f = _Fields(reader.fields)
    _check_strings(f)
    arch = _string(f, "general.architecture")
    if arch is None:
        f.problems.append("general.architecture is missing")
        _raise(path, f.problems)
    hp = _hyperparameters(f, arch)
    n_vocab = _vocabulary(f)
    if not f.problems:  # tensor checks need sound numbers
        _tensors(f, arch, hp, n_vocab, reader.tensors)
    _raise(path, f.problems)
    return {"architecture": arch, "context_length": hp["n_ctx"], "n_vocab": n_vocab}


def _raise(path: Path, problems: list[str]) -> None:
    if problems:
        shown = problems[:6] + ([f"and {len(problems) - 6} more"] if len(problems) > 6 else [])
        raise InputError(path, "GGUF metadata llama.cpp cannot use: " + "; ".join(shown))


def _check_strings(f: _Fields) -> None:
    """Every string value (names, chat template, tokenizer model) must be UTF-8; token arrays aside."""
    for key, field in f.fields.items():
        if f.kind(key) == "STRING":
            try:
                bytes(field.parts[-1]).decode("utf-8")
            except UnicodeDecodeError as exc:
                f.problems.append(f"{key} is not valid UTF-8 (byte {exc.start})")


def _string(f: _Fields, key: str) -> str | None:
    if f.kind(key) != "STRING":
        return None
    try:
        return f.fields[key].contents()
    except UnicodeDecodeError:
        return None


def _hyperparameters(f: _Fields, arch: str) -> dict[str, Any]:
    n_layer = f.integer(f"{arch}.block_count", 1, LLAMA_MAX_LAYERS)
    n_ctx = f.integer(f"{arch}.context_length", 1, MAX_CONTEXT)
    n_embd = f.integer(f"{arch}.embedding_length", 1, 1 << 20)
    n_head = f.integer(f"{arch}.attention.head_count", 1, 1 << 12)
    n_kv = f.integer(f"{arch}.attention.head_count_kv", 1, 1 << 12, required=False) or n_head
    f.integer(f"{arch}.feed_forward_length", 1, 1 << 22, required=arch in DENSE_ARCHS)
    head_dim = f.integer(f"{arch}.attention.key_length", 1, 1 << 14, required=False)
    f.integer(f"{arch}.attention.value_length", 1, 1 << 14, required=False)
    if n_head and n_kv and n_head % n_kv:
        f.problems.append(f"{arch}.attention.head_count ({n_head}) is not a multiple of head_count_kv ({n_kv})")
    if head_dim is None and n_embd and n_head:
        if n_embd % n_head:
            f.problems.append(f"{arch}.embedding_length ({n_embd}) is not a multiple of head_count ({n_head})")
        head_dim = n_embd // n_head
    rope_dims = f.integer(f"{arch}.rope.dimension_count", 1, 1 << 14, required=False)
    if rope_dims and head_dim and rope_dims > head_dim:
        f.problems.append(f"{arch}.rope.dimension_count ({rope_dims}) exceeds the head size ({head_dim})")
    for key in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "rope.freq_base"):
        f.number(f"{arch}.{key}")
    return {"n_layer": n_layer, "n_ctx": n_ctx, "n_embd": n_embd, "n_head": n_head, "n_kv": n_kv, "head_dim": head_dim}


def _vocabulary(f: _Fields) -> int | None:
    """Tokens, scores and token types agree in length; special token ids fall inside the vocabulary."""
    n_vocab = f.array_len("tokenizer.ggml.tokens")
    if n_vocab is None:
        if "tokenizer.ggml.tokens" not in f.fields:
            f.problems.append("tokenizer.ggml.tokens is missing")
        return None
    if n_vocab == 0:
        f.problems.append("tokenizer.ggml.tokens is empty")
        return None
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        length = f.array_len(key)
        if length is not None and length != n_vocab:
            f.problems.append(f"{key} has {length} entries but the vocabulary has {n_vocab} tokens")
    for key in f.fields:
        if _SPECIAL_ID.match(key):
            f.integer(key, 0, n_vocab - 1)
    return n_vocab


def _tensors(f: _Fields, arch: str, hp: dict[str, Any], n_vocab: int | None, tensors: list) -> None:
    """Tensors the graph needs exist, blocks match ``block_count``, embedding shapes match the vocabulary."""
    by_name = {t.name: [int(d) for d in t.shape] for t in tensors}
    n_layer = hp["n_layer"]
    for name in by_name:
        if (m := _BLOCK.match(name)) and int(m.group(1)) >= n_layer:
            f.problems.append(f"tensor {name} belongs to a block past {arch}.block_count ({n_layer})")
            break
    if "token_embd.weight" not in by_name:
        f.problems.append("tensor token_embd.weight is missing")
    for name in ("token_embd.weight", "output.weight"):
        shape = by_name.get(name)
        if shape is not None and n_vocab and shape[:2] != [hp["n_embd"], n_vocab]:
            f.problems.append(f"tensor {name} has shape {shape}, expected [{hp['n_embd']}, {n_vocab}]")
    if arch not in DENSE_ARCHS:
        return
    if "output_norm.weight" not in by_name:
        f.problems.append("tensor output_norm.weight is missing")
    for i in range(n_layer):
        names = {f"blk.{i}.{t}.weight" for t in BLOCK_TENSORS}
        if not any(f"blk.{i}.{norm}.weight" in by_name for norm in ATTENTION_NORMS):
            names.add(f"blk.{i}.{ATTENTION_NORMS[0]}.weight")
        if f"blk.{i}.attn_qkv.weight" not in by_name:
            names |= {f"blk.{i}.attn_{p}.weight" for p in "qkv"}
        missing = sorted(n for n in names if n not in by_name)
        if missing:
            f.problems.append(
                f"tensor {missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if missing[1:] else "")
            )
            return
        width = {"attn_q": hp["n_head"] * hp["head_dim"], "attn_k": hp["n_kv"] * hp["head_dim"]}
        for part, rows in width.items():
            shape = by_name.get(f"blk.{i}.{part}.weight")
            if shape is not None and shape[:2] != [hp["n_embd"], rows]:
                f.problems.append(f"tensor blk.{i}.{part}.weight has shape {shape}, expected [{hp['n_embd']}, {rows}]")
                return
