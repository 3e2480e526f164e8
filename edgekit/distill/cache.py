"""Teacher top-K cache: run the teacher once, train many students without it.

Format (a folder):
- ``index.json``: format tag, k, vocab, temperature, seq_len, rows, shard_rows, id dtype, a sha256
  of the token rows, the shard list, and (once complete) total bytes and bytes per token.
- ``shard-00000.safetensors`` ...: for ``shard_rows`` rows of ``seq_len`` tokens,
  ``input_ids`` int32 [r, seq], ``logprobs`` float16 [r, seq, K] (teacher log-probabilities at the
  cache's temperature, largest first), ``ids`` uint16 (vocab ≤ 65,536) or int32 [r, seq, K], and
  ``tail`` float32 [r, seq]: the teacher mass outside the top K, stored exactly because
  1 − Σ exp(float16 log-probs) would lose it to rounding.

Per token that is K·(2 + 2) + 4 + 4 bytes: 264 B at K = 64 with a 32k vocabulary.
Every shard is written atomically and the index names the shards it expects, so an interrupted build
resumes by skipping finished shards; a cache built for different rows or settings is refused.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edgekit.errors import InputError
from edgekit.fileio import atomic_path, read_json, write_json_atomic

FORMAT = "edgekit-topk-v1"
INDEX = "index.json"


def rows_digest(rows: torch.Tensor) -> str:
    """sha256 of token rows [n, seq] as int64, so a cache is tied to the exact data it was built on."""
    return hashlib.sha256(rows.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def _settings(teacher, rows: torch.Tensor, k: int, temperature: float, shard_rows: int) -> dict[str, Any]:
    vocab = int(teacher.config.vocab_size)
    n = int(rows.shape[0])
    return {
        "format": FORMAT,
        "k": min(k, vocab),
        "vocab": vocab,
        "temperature": float(temperature),
        "seq_len": int(rows.shape[1]),
        "rows": n,
        "shard_rows": shard_rows,
        "id_dtype": "uint16" if vocab <= 65536 else "int32",
        "rows_sha256": rows_digest(rows),
        "shards": [_shard_name(i) for i in range(math.ceil(n / shard_rows))],
    }


@torch.no_grad()
def teacher_topk(teacher, rows: torch.Tensor, k: int, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Top-K log-probs [b, seq, K], their ids and the exact tail mass [b, seq] for token rows [b, seq]."""
    device = next(teacher.parameters()).device
    logits = teacher(input_ids=rows.to(device)).logits.float()
    lp = torch.log_softmax(logits / temperature, dim=-1)
    top_lp, top_ids = lp.topk(k, dim=-1)
    tail = (-torch.expm1(torch.logsumexp(top_lp.double(), dim=-1))).clamp(min=0.0)
    return {"logprobs": top_lp.cpu(), "ids": top_ids.cpu(), "tail": tail.float().cpu()}


def build_topk_cache(
    teacher,
    rows: torch.Tensor,
    folder: str | Path,
    *,
    k: int = 64,
    temperature: float = 1.0,
    shard_rows: int = 64,
    batch: int = 4,
    progress: bool = False,
) -> TopKCache:
    """Run ``teacher`` over rows [n, seq] and store its top-K distribution per token under ``folder``.

    Resumable: shards already on disk are kept; only missing ones are computed.
    """
    folder = Path(folder)
    settings = _settings(teacher, rows, k, temperature, shard_rows)
    _check_or_start(folder, settings)
    id_dtype = torch.uint16 if settings["id_dtype"] == "uint16" else torch.int32
    teacher.eval()
    for i, name in enumerate(settings["shards"]):
        if (folder / name).is_file():
            continue
        part = rows[i * shard_rows : (i + 1) * shard_rows]
        pieces = [
            teacher_topk(teacher, part[j : j + batch], settings["k"], temperature) for j in range(0, len(part), batch)
        ]
        tensors = {
            "input_ids": part.to(torch.int32).contiguous(),
            "logprobs": torch.cat([p["logprobs"] for p in pieces]).half().contiguous(),
            "ids": torch.cat([p["ids"] for p in pieces]).to(id_dtype).contiguous(),
            "tail": torch.cat([p["tail"] for p in pieces]).contiguous(),
        }
        with atomic_path(folder / name) as tmp:
            save_file(tensors, tmp)
        if progress:
            print(f"topk cache: shard {i + 1}/{len(settings['shards'])}")
    total = sum((folder / name).stat().st_size for name in settings["shards"])
    tokens = settings["rows"] * settings["seq_len"]
    write_json_atomic(folder / INDEX, {**settings, "complete": True, "bytes": total, "bytes_per_token": total / tokens})
    return TopKCache(folder)


def _check_or_start(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse a folder holding a cache of other rows/settings; otherwise (re)write the index."""
    if (folder / INDEX).is_file():
        old = read_json(folder / INDEX)
        diffs = [key for key, value in settings.items() if old.get(key) != value]
        if diffs:
            raise InputError(folder, f"holds a top-K cache built with different {', '.join(diffs)}; use a new folder")
        if old.get("complete"):
            return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / INDEX, {**settings, "complete": False})


class TopKCache:
    """Read side of a cache folder: per-row top-K targets for the trainer, shards loaded on demand."""

    def __init__(self, folder: str | Path, max_shards_in_memory: int = 4):
        self.folder = Path(folder)
        if not (self.folder / INDEX).is_file():
            raise InputError(self.folder, "is not a top-K cache (no index.json)")
        self.index: dict[str, Any] = read_json(self.folder / INDEX)
        if self.index.get("format") != FORMAT:
            raise InputError(self.folder, f"cache format {self.index.get('format')!r}, expected {FORMAT!r}")
        if not self.index.get("complete"):
            raise InputError(self.folder, "top-K cache is incomplete; rerun the build to finish it")
        self._shards: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._max = max_shards_in_memory

    @property
    def temperature(self) -> float:
        return float(self.index["temperature"])

    @property
    def bytes_per_token(self) -> float:
        """Bytes on disk per cached token (all shards, all tensors)."""
        return float(self.index["bytes_per_token"])

    def __len__(self) -> int:
        return int(self.index["rows"])

    def _shard(self, i: int) -> dict[str, torch.Tensor]:
        if i not in self._shards:
            self._shards[i] = load_file(self.folder / self.index["shards"][i])
            if len(self._shards) > self._max:
                self._shards.popitem(last=False)
        self._shards.move_to_end(i)
        return self._shards[i]

    def _gather(self, idx: torch.Tensor, key: str) -> torch.Tensor:
        per = int(self.index["shard_rows"])
        return torch.stack([self._shard(int(r) // per)[key][int(r) % per] for r in idx])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``idx``: input_ids [b, seq] int64, logprobs [b, seq, K] float32, ids int64, tail [b, seq]."""
        return {
            "input_ids": self._gather(idx, "input_ids").long(),
            "logprobs": self._gather(idx, "logprobs").float(),
            "ids": self._gather(idx, "ids").long(),
            "tail": self._gather(idx, "tail").float(),
        }

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs, ids) of rows ``idx``: the first interface, kept for callers."""
        b = self.batch(idx)
        return b["logprobs"], b["ids"]

    def all_input_ids(self) -> torch.Tensor:
        """Every cached token row [n, seq] (int64), so training needs neither teacher nor source text."""
        return self._gather(torch.arange(len(self)), "input_ids").long()
