"""GGUF straight from a checkpoint folder, one tensor at a time, without loading the model.

``edgekit.export.gguf.write_gguf`` converts a model held in memory (float32: 4 bytes a parameter,
plus gguf-py keeping every converted array until the file is written). This writes the same bytes
from the safetensors files: the tensor table (names, shapes, GGML types, offsets) goes into the
header first, from the safetensors headers alone; then each weight is read, transformed by the same
functions (``gguf_sources``, ``transform``, ``encode``), written and dropped, in blocks of rows where
the transform allows. Peak memory is one block (``CHUNK_ELEMENTS``) or one rotary-permuted tensor,
plus the pages of the tensor being read.

Tensor order is the model's ``state_dict`` order, taken from the model built on the meta device (no
memory). A checkpoint whose tensor names are not exactly the model's (transformers renames some
legacy layouts on load), or whose dtype the user's ``--dtype`` would round on load, is written by the
in-memory writer instead, with one log line saying why, so the file is the same either way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.export.checkpoint import FLOAT_DTYPES, INDEX, Checkpoint
from edgekit.export.gguf import (
    checked_vocab,
    encode,
    extra_tensors,
    gguf_sources,
    needs_whole_tensor,
    start_writer,
    stored_type,
    transform,
    write_gguf,
)
from edgekit.fileio import atomic_path

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 24  # elements converted at a time: 64 MiB as float32, a few times that in temporaries
# safetensors dtype name -> the GGUF level that holds it exactly (the quantization base's precision)
EXACT_LEVEL = {"BF16": "BF16", "F16": "F16", "F32": "F32"}
_LOAD_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}  # edgekit --dtype -> safetensors name


@dataclass(frozen=True)
class StreamPlan:
    """What the streaming writer writes: config, checkpoint, and (GGUF name, HF name, stored name, shape) in order."""

    config: Any
    checkpoint: Checkpoint
    tensors: tuple[tuple[str, str, str, tuple[int, ...]], ...]

    @property
    def source_level(self) -> str:
        """The GGUF level holding every matrix exactly: the checkpoint's own precision, F32 when mixed."""
        dtypes = {self.checkpoint.tensors[s].dtype for _, _, s, shape in self.tensors if len(shape) > 1}
        return EXACT_LEVEL[dtypes.pop()] if len(dtypes) == 1 else "F32"


def model_layout(config) -> dict[str, tuple[int, ...]]:
    """The model's ``state_dict`` names and shapes, in order, from a model built on the meta device (no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def stream_plan(model_dir: str | Path, config) -> tuple[StreamPlan | None, str]:
    """(plan, "") when the checkpoint can be streamed with the same result as loading it, else (None, why).

    Unreadable or truncated files and missing shards raise ``InputError`` naming the file.
    """
    from edgekit.arch import family_of
    from edgekit.loading import options_for

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return None, "it is not a folder on disk"
    if not any(model_dir.glob("*.safetensors")) and not (model_dir / INDEX).is_file():
        return None, "it has no safetensors files"
    checkpoint = Checkpoint(model_dir)
    layout = model_layout(config)
    family = family_of(config)
    tied_head = f"{family.lm_head_path}.weight" if config.tie_word_embeddings else None
    stored = {n for n in checkpoint.tensors if not n.endswith("rotary_emb.inv_freq")}
    if tied_head in stored:
        return None, f"it stores {tied_head} although the head is tied to the embedding"
    if extra := sorted(stored - set(layout)):
        return None, f"its tensor names are not the model's (e.g. {extra[0]!r}; transformers renames them on load)"
    load_dtype = _LOAD_DTYPE[options_for(model_dir).dtype]
    rows = []
    for name, hf_name in gguf_sources(config, layout):
        source = f"{family.embed_path}.weight" if hf_name == tied_head else hf_name
        if source not in checkpoint.tensors:
            return None, f"it has no tensor {source!r} (transformers maps other names on load)"
        entry = checkpoint.tensors[source]
        if entry.shape != layout[hf_name]:
            return None, f"{source} has shape {list(entry.shape)}, the model {list(layout[hf_name])}"
        if entry.dtype not in FLOAT_DTYPES:
            return None, f"{source} is stored as {entry.dtype}, not a float type"
        if load_dtype != "F32" and entry.dtype != load_dtype:
            return None, f"--dtype {options_for(model_dir).dtype} rounds its {entry.dtype} weights on load"
        rows.append((name, hf_name, source, entry.shape))
    return StreamPlan(config, checkpoint, tuple(rows)), ""


def write_gguf_streaming(
    plan: StreamPlan,
    tokenizer,
    path: Path,
    level: str = "F32",
    name: str = "model",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the planned checkpoint as an F32 / F16 / BF16 GGUF at ``path`` (atomically), a tensor at a time."""
    import gguf

    config = plan.config
    vocab = checked_vocab(config, tokenizer, path)  # fails before anything is written
    extras = [(n, *encode(data, level)) for n, data in extra_tensors(config)]  # small: computed from the config
    with atomic_path(path) as tmp:
        writer = start_writer(tmp, config, vocab, level, name, metadata)
        for gguf_name, _, _, shape in plan.tensors:
            kind = stored_type(len(shape), level)
            nbytes = math.prod(gguf.quants.quant_shape_to_byte_shape(shape, kind))
            writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)
        for gguf_name, packed, raw_dtype in extras:  # as ``add_tensor`` describes them
            writer.add_tensor_info(gguf_name, packed.shape, packed.dtype, packed.nbytes, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for entry in plan.tensors:
            writer.write_tensor_data(_Blocks(plan, entry, level))
        for _, packed, _ in extras:
            writer.write_tensor_data(packed)
        writer.close()
    return path


class _Blocks:
    """One tensor as ``GGUFWriter.write_tensor_data`` takes it (``nbytes``, ``tofile``), converted block by block."""

    def __init__(self, plan: StreamPlan, entry: tuple[str, str, str, tuple[int, ...]], level: str):
        import gguf

        self.plan, self.entry, self.level = plan, entry, level
        shape = entry[3]
        self.nbytes = math.prod(gguf.quants.quant_shape_to_byte_shape(shape, stored_type(len(shape), level)))

    def tofile(self, fh) -> None:
        name, hf_name, source, shape = self.entry
        checkpoint, config = self.plan.checkpoint, self.plan.config
        if needs_whole_tensor(config, name):
            blocks = iter([checkpoint.read(source)])
        else:
            blocks = checkpoint.row_blocks(source, CHUNK_ELEMENTS)
        written = 0
        for block in blocks:
            raw = _unchanged(block, config, name, hf_name, self.level, len(shape))
            if raw is None:
                data = transform(config, name, hf_name, block.float().numpy())
                raw, _ = encode(data, self.level, ndim=len(shape))
            raw.tofile(fh)
            written += raw.nbytes
            del block, raw
        if written != self.nbytes:  # the header already promised nbytes: never leave a file that lies
            raise RuntimeError(f"{name}: wrote {written} bytes, the tensor table says {self.nbytes}")


_SAME_BITS = {("BF16", "BF16"), ("F16", "F16"), ("F32", "F32")}  # stored dtype, GGML type: no conversion


def _unchanged(block, config, name: str, hf_name: str, level: str, ndim: int) -> np.ndarray | None:
    """The block's own bytes when converting through float32 would give them back, else None.

    Widening BF16/F16 to float32 is exact and so is narrowing back any value that is not a NaN (gguf-py
    and numpy may quiet a NaN's payload), so a block without NaNs that no transform touches is copied.
    """
    import torch

    if transform_touches(config, name, hf_name):
        return None
    stored = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}.get(block.dtype)
    if (stored, stored_type(ndim, level).name) not in _SAME_BITS or torch.isnan(block).any():
        return None
    return block.contiguous().view(torch.uint8).numpy()


def transform_touches(config, name: str, hf_name: str) -> bool:
    """Whether ``transform`` changes this tensor (rotary permute or norm offset)."""
    from edgekit.arch import family_of

    return needs_whole_tensor(config, name) or bool(family_of(config).norm_offset and hf_name.endswith("norm.weight"))


class GgufSource:
    """Where an export's GGUF files come from: the checkpoint streamed, or (fallback) the model in memory.

    ``loaded`` is a model the caller already holds (reused by the fallback); otherwise the fallback
    loads one once, when first needed.
    """

    def __init__(self, model_dir: str | Path, config, loaded=None):
        self.model_dir = Path(model_dir)
        self.plan, why = stream_plan(self.model_dir, config)
        self._model = loaded
        if self.plan is None:
            log.warning("%s: writing GGUF from the model in memory, not streamed: %s", self.model_dir, why)

    @property
    def base_level(self) -> str:
        """The level of the file quantized levels are made from: the checkpoint's precision (F32 in memory)."""
        return self.plan.source_level if self.plan else "F32"

    def write(self, tokenizer, path: Path, level: str, name: str, metadata: dict[str, Any] | None) -> Path:
        if self.plan is not None:
            return write_gguf_streaming(self.plan, tokenizer, path, level, name, metadata)
        if self._model is None:
            from edgekit.models import load_model

            self._model = load_model(self.model_dir)
        return write_gguf(self._model, tokenizer, path, level, name, metadata)
