"""Text sources, splits, packing and the fixed held-out set.

The built-in corpus is text every CPython install carries: the pydoc topic pages and the
docstrings of the standard library's modules, classes and functions, read from source files with
``ast`` (never imported, so nothing runs). The held-out split is decided per document by a hash of
its text, so it never moves when documents are added, removed or reordered.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from edgekit.errors import InputError

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}
_MIN_DOC_CHARS = 200  # shorter docstrings are mostly one-liners that teach the model little


@lru_cache(maxsize=1)
def builtin_documents() -> tuple[str, ...]:
    """The built-in corpus: pydoc topics + stdlib docstrings, in a stable order (a few MB)."""
    from pydoc_data.topics import topics

    docs = [topics[name].strip() for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(stdlib).parts):
            continue
        docs.extend(_docstrings(path))
    return tuple(d for d in docs if len(d) >= _MIN_DOC_CHARS)


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef))]
    return [doc.strip() for n in nodes if (doc := ast.get_docstring(n))]


def is_heldout(text: str, fraction: float) -> bool:
    """Whether a document belongs to the held-out split (stable: depends on its text only)."""
    bucket = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") / 2**32
    return bucket < fraction


def split_documents(docs: Iterable[str], heldout_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """(train, heldout) by the stable per-document hash."""
    train, heldout = [], []
    for doc in docs:
        (heldout if is_heldout(doc, heldout_fraction) else train).append(doc)
    return train, heldout


def load_texts(path: str | Path) -> list[str]:
    """Documents from a user file: ``.txt`` (blank-line separated), ``.jsonl`` (a "text" field) or a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        return [doc for p in sorted(path.glob("*")) if p.suffix in (".txt", ".jsonl") for doc in load_texts(p)]
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(path, f"line {n}: expected a JSON object with a 'text' field") from None
        return docs
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    return [block.strip() for block in text.split("\n\n") if block.strip()]


def tokenize_documents(tokenizer, docs: Sequence[str]) -> list[list[int]]:
    """Token ids of each document, each ending with EOS so packed sequences keep boundaries."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(docs), add_special_tokens=True)["input_ids"]
    return [ids + ([eos] if eos is not None else []) for ids in encoded]


def pack(token_lists: Iterable[Sequence[int]], seq_len: int, max_sequences: int | None = None):
    """Concatenate and cut into rows of ``seq_len`` tokens: LongTensor [n, seq_len] (tail dropped)."""
    import torch

    flat: list[int] = []
    limit = None if max_sequences is None else max_sequences * seq_len
    for ids in token_lists:
        flat.extend(ids)
        if limit is not None and len(flat) >= limit:
            break
    n = len(flat) // seq_len if limit is None else min(len(flat) // seq_len, max_sequences)
    if n == 0:
        raise ValueError(f"not enough text for one sequence of {seq_len} tokens ({len(flat)} tokens)")
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)


def heldout_set(tokenizer, seq_len: int = 256, n_sequences: int = 16, docs: Sequence[str] | None = None):
    """The fixed held-out evaluation set: [n_sequences, seq_len] token ids from held-out documents."""
    if docs is None:
        _, docs = split_documents(builtin_documents())
    return pack(tokenize_documents(tokenizer, docs), seq_len, n_sequences)


def training_set(tokenizer, seq_len: int = 256, max_sequences: int | None = None, docs=None):
    """Packed training rows [n, seq_len] from the training split (built-in corpus by default)."""
    if docs is None:
        docs, _ = split_documents(builtin_documents())
    return pack(tokenize_documents(tokenizer, docs), seq_len, max_sequences)
