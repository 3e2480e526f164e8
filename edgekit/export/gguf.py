"""Hugging Face -> GGUF for every family in edgekit.arch, written with the ``gguf`` package.

Tensor names come from gguf-py's own tables (``gguf.get_tensor_name_map`` for the family's
llama.cpp architecture); hparams, transforms and loader rules from the family spec.

F32, F16 and BF16 files are written directly, streamed from the checkpoint a tensor at a time
(``edgekit.export.gguf_stream``); quantized levels are made by llama.cpp's own quantizer
(``edgekit.export.quantize``) from a file in the checkpoint's own precision (BF16, F16 or F32: exact,
so the quantized bytes are the same as from F32), with an importance matrix for the low-bit levels.
Every file is written under a temporary name and renamed, with a JSON sidecar beside it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.arch import family_of, head_dim, rope_theta
from edgekit.arch.base import rope_dims
from edgekit.errors import InputError, UnsupportedModelError
from edgekit.export.gguf_rope import rope_factors, rope_scaling_of, write_rope_scaling
from edgekit.export.gguf_tokenizer import pad_vocab, vocab_from_tokenizer, write_vocab
from edgekit.export.sidecar import write_sidecar
from edgekit.fileio import atomic_path

log = logging.getLogger(__name__)

DIRECT_LEVELS = {"F32": np.float32, "F16": np.float16, "BF16": None}  # written without llama.cpp
FILE_TYPES = {"F32": 0, "F16": 1, "BF16": 32}


def _tensor_map(family, n_blocks: int):
    """gguf-py's HF -> GGUF tensor-name table for the family's llama.cpp architecture."""
    import gguf

    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[family.gguf_arch]
    return gguf.get_tensor_name_map(arch, n_blocks)


def gguf_name(hf_name: str, family, n_blocks: int) -> str:
    """GGUF tensor name of a HF parameter, from gguf-py's own tables; raises if the arch has none."""
    base, _, suffix = hf_name.rpartition(".")
    name = _tensor_map(family, n_blocks).get_name(base)
    if name is None:
        raise UnsupportedModelError(f"tensor {hf_name!r} has no counterpart in llama.cpp's {family.gguf_arch} graph")
    return f"{name}.{suffix}"


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF half-split rotary rows -> interleaved pairs, per head ([n_heads*head_dim, ...])."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_sources(config, hf_names: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(GGUF name, HF parameter name) of every weight written, in ``hf_names`` (state_dict) order.

    The output head is skipped when tied, unless llama.cpp needs it anyway (a copy of the embedding);
    rotary ``inv_freq`` buffers are computed by llama.cpp, never stored.
    """
    family = family_of(config)
    for hf_name in hf_names:
        if hf_name == f"{family.lm_head_path}.weight" and config.tie_word_embeddings and not family.gguf_needs_output:
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        yield gguf_name(hf_name, family, config.num_hidden_layers), hf_name


def needs_whole_tensor(config, name: str) -> bool:
    """Whether ``transform`` mixes rows of this GGUF tensor (the rotary permute), so it cannot be done in row chunks."""
    return family_of(config).gguf_permute_qk and name.split(".")[-2] in ("attn_q", "attn_k")


def transform(config, name: str, hf_name: str, data: np.ndarray) -> np.ndarray:
    """The family's transforms on one float32 weight (whole, or a row chunk unless ``needs_whole_tensor``):
    rotary permute where llama.cpp rotates interleaved pairs, norm offset where RMSNorm is (1 + w)."""
    family = family_of(config)
    kind = name.split(".")[-2]
    if needs_whole_tensor(config, name):
        data = permute_rotary(data, config.num_attention_heads if kind == "attn_q" else config.num_key_value_heads)
    if family.norm_offset and hf_name.endswith("norm.weight"):
        data = data + np.float32(family.norm_offset)
    return data


def extra_tensors(config) -> Iterator[tuple[str, np.ndarray]]:
    """Tensors llama.cpp reads that are not HF weights (small, computed from the config), after the weights."""
    family = family_of(config)
    factors = None if family.gguf_own_rope_scaling else rope_factors(config, rope_scaling_of(config, family.gguf_arch))
    if factors is not None:  # llama3-style scaling: per-frequency divisors llama.cpp reads as a tensor
        yield "rope_freqs.weight", factors
    yield from family.gguf_extra_tensors(config).items()


def gguf_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every weight of a model in memory, with the family's transforms applied."""
    c = model.config
    state = model.state_dict()
    for name, hf_name in gguf_sources(c, state):
        yield name, transform(c, name, hf_name, state[hf_name].detach().float().cpu().numpy())
    yield from extra_tensors(c)


def _write_hparams(writer, config, name: str) -> None:
    family = family_of(config)
    hd = head_dim(config)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_rope_dimension_count(rope_dims(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    if not family.gguf_own_rope_scaling:
        write_rope_scaling(writer, rope_scaling_of(config, family.gguf_arch))
    family.write_gguf_hparams(writer, config)


def gguf_refusals(config) -> list[str]:
    """Why llama.cpp could not run a GGUF of this config faithfully (empty when it can)."""
    family = family_of(config)
    if family.gguf_arch is None:
        return [f"{config.model_type}: no GGUF export ({family.gguf_refusal})"]
    problems = list(family.refuse_gguf(config))
    if not family.gguf_own_rope_scaling:
        try:
            rope_scaling_of(config, family.gguf_arch)
        except UnsupportedModelError as exc:
            problems.append(str(exc))
    return problems


def gguf_warnings(config, context: int) -> list[str]:
    """Ways a GGUF of this config runs but differs from PyTorch at ``context`` tokens."""
    return list(family_of(config).warn_gguf(config, context))


def write_gguf(
    model, tokenizer, path: Path, level: str = "F32", name: str = "model", metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (in memory) as an F32 / F16 / BF16 GGUF at ``path`` (atomically).

    ``edgekit.export.gguf_stream`` writes the same bytes from a checkpoint folder without loading it.
    """
    vocab = checked_vocab(model.config, tokenizer, path)  # fails before anything is written
    with atomic_path(path) as tmp:
        writer = start_writer(tmp, model.config, vocab, level, name, metadata)
        for tensor_name, data in gguf_tensors(model):
            packed, raw_dtype = encode(data, level)
            writer.add_tensor(tensor_name, packed, raw_dtype=raw_dtype)  # shape from the bytes
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def checked_vocab(config, tokenizer, path: Path):
    """The tokenizer's GGUF vocabulary, after refusing configs llama.cpp cannot run (errors name ``path``)."""
    if problems := gguf_refusals(config):
        raise UnsupportedModelError(f"{path}: cannot export to GGUF: " + "; ".join(problems))
    vocab = vocab_from_tokenizer(tokenizer)
    if len(vocab.tokens) > config.vocab_size:
        raise InputError(
            path, f"tokenizer has {len(vocab.tokens)} tokens but the model only {config.vocab_size} embeddings"
        )
    return vocab


def start_writer(path: Path, config, vocab, level: str, name: str, metadata: dict[str, Any] | None):
    """A ``gguf.GGUFWriter`` for ``path`` holding every key (hparams, file type, vocabulary, provenance), no tensors."""
    import gguf

    writer = gguf.GGUFWriter(path, family_of(config).gguf_arch)
    _write_hparams(writer, config, name)
    writer.add_file_type(FILE_TYPES[level])
    write_vocab(writer, pad_vocab(vocab, config.vocab_size))
    for key, value in (metadata or {}).items():
        writer.add_string(f"edgekit.{key}", str(value))
    return writer


def stored_type(ndim: int, level: str):
    """GGML type a weight of ``ndim`` dimensions is stored as in a ``level`` file: norms and biases stay F32."""
    import gguf

    if ndim == 1 or level == "F32":  # norms and biases stay F32, as llama.cpp expects
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType[level]


def encode(data: np.ndarray, level: str, ndim: int | None = None) -> tuple[np.ndarray, Any]:
    """(array as written, raw GGML type or None) for float32 ``data`` in a ``level`` file.

    ``ndim`` is the whole tensor's when ``data`` is a row chunk of it. BF16 is packed by gguf-py's
    own rounding (round to nearest even, NaNs kept quiet) into bytes, so the shape comes from them.
    """
    import gguf

    kind = stored_type(data.ndim if ndim is None else ndim, level)
    if kind == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32), None
    if kind == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), None
    return gguf.quants.quantize(data.astype(np.float32), kind), kind


IMATRIX_LEVELS = {"Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q4_0"}


def export_gguf(
    model_dir: str | Path,
    out_dir: str | Path,
    quants: list[str] | tuple[str, ...] = ("F32",),
    *,
    name: str | None = None,
    imatrix: str | Path | None = "auto",
    calibration_ids=None,
    calibration_source: str | None = None,
    type_overrides: dict[str, str] | None = None,
    provenance: dict[str, str] | None = None,
    progress: bool = True,
    allocate: str | None = None,
    bpw: list[float] | tuple[float, ...] = (),
) -> list[Path]:
    """Export a HF folder to one GGUF file per level in ``out_dir``; returns their paths (same order).

    ``imatrix="auto"`` computes an importance matrix from ``calibration_ids`` [n, seq] (default: 16
    rows of the built-in corpus) for the low-bit levels; ``None`` quantizes without one; a path
    loads a saved one (``<name>-imatrix.safetensors``, written beside the files whenever one is
    computed, or a GGUF imatrix from llama.cpp's ``llama-imatrix``).
    ``type_overrides`` ({regex on GGUF tensor names: GGML type}, e.g. ``{"^output\\.weight$": "Q8_0"}``)
    applies to every quantized level. ``provenance`` (string pairs, written as ``edgekit.<key>``)
    defaults to the source folder. Every input is checked before anything is computed or written.
    ``allocate`` (auto, measure or fisher; None for llama.cpp's own mixes) chooses each tensor's
    type from its measured sensitivity on the calibration rows, within the size of llama.cpp's mix
    for each level (``edgekit.export.mix``); ``bpw`` adds one such file per bits-per-weight
    target (``<name>-4.5bpw.gguf``), after the levels' files in the returned list.
    """
    from edgekit.export.checks import check_source
    from edgekit.export.quantize import FTYPES, check_overrides, quantize_gguf
    from edgekit.fileio import temporary_dir
    from edgekit.lowmem import load_resident, release
    from edgekit.models import load_tokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    unknown = [q for q in quants if q not in FTYPES]
    if unknown:
        raise InputError(model_dir, f"unknown GGUF level(s) {', '.join(unknown)}; choose from {', '.join(FTYPES)}")
    check_overrides(type_overrides or {})
    config = check_source(model_dir)
    tokenizer = load_tokenizer(model_dir)
    _check_representable(config, tokenizer, model_dir)
    from edgekit.export.gguf_stream import GgufSource

    if bpw and not allocate:
        raise InputError(model_dir, "bits-per-weight targets need a sensitivity allocation (allocate='auto')")
    skipped = None  # why allocate=auto kept llama.cpp's mixes, recorded in each sidecar
    if allocate == "auto" and not bpw and (skipped := _auto_fallback(config)):
        log.warning("%s: %s", model_dir, skipped)
        allocate = None
    needs_imatrix = imatrix is not None and bool(bpw or any(q in IMATRIX_LEVELS for q in quants))
    # bf16 stays bf16 in memory; the imatrix and the probe compute in fp32 one unit at a time
    model = load_resident(model_dir) if allocate or (needs_imatrix and imatrix == "auto") else None
    source = GgufSource(model_dir, config, loaded=model)  # streams the checkpoint; else writes ``model``
    name = name or model_dir.name
    provenance = provenance if provenance is not None else {"source": str(model_dir)}
    paths = {q: out_dir / f"{name}-{q}.gguf" for q in quants}
    imx, imx_info = None, None
    if needs_imatrix:
        imx, imx_info = _imatrix_for(model, tokenizer, imatrix, calibration_ids, calibration_source)
        if imatrix == "auto":  # kept for reuse: ``--imatrix <file>`` skips the forward passes next time
            from edgekit.export.imatrix import save_imatrix_file

            save_imatrix_file(out_dir / f"{name}-imatrix.safetensors", imx, imx_info)
    if model is not None and not allocate and source.plan is not None:  # the streamed writer needs no model
        release(model)
    with temporary_dir(out_dir, "gguf") as tmp:  # inside --out, removed on failure and by the next run
        # the allocation's probe reads an F32 base; otherwise the checkpoint's own precision is exact
        base_level = "F32" if allocate else source.base_level
        base = paths.get(base_level) or Path(tmp) / f"base-{base_level}.gguf"
        source.write(tokenizer, base, base_level, name, provenance)
        mixes = {}
        if allocate:
            from edgekit.export.mix import plan_mixes

            quantized = [q for q in quants if q not in DIRECT_LEVELS]
            rows = _calibration(tokenizer, calibration_ids)
            mixes = plan_mixes(
                model,
                base,
                quantized,
                list(bpw),
                rows,
                imatrix=imx,
                fixed=type_overrides,
                method=allocate,
                workdir=Path(tmp),
            )
            paths |= {label: out_dir / f"{name}-{label}.gguf" for label in mixes}
        for level in quants:  # direct levels may need the model (the writer's fallback): written first
            if level in DIRECT_LEVELS and paths[level] != base:
                source.write(tokenizer, paths[level], level, name, provenance)
        if model is not None:
            release(model)  # llama-quantize needs no fp weights: return them before it starts (idempotent)
        del model, source  # the writer's fallback may hold a model of its own
        gc.collect()
        for level in [*quants, *(m for m in mixes if m not in quants)]:
            overrides, info, mix = {}, None, mixes.get(level)
            gate = mix.level if mix else level
            if level not in DIRECT_LEVELS:
                use = imx if gate in IMATRIX_LEVELS or mix else None
                use = mix.imatrix_subset(use) if mix else use
                info, overrides = (imx_info if use else None), (mix.overrides if mix else type_overrides or {})
                meta = _imatrix_metadata(imx_info) if use else {}
                quantize_gguf(base, paths[level], gate, imatrix=use, type_overrides=overrides, metadata=meta)
            extra = {"imatrix": info, "type_overrides": overrides, "architecture": config.model_type}
            if mix:
                from edgekit.export.mix import summary

                extra["allocation"] = summary(mix)
            elif skipped and level not in DIRECT_LEVELS:
                extra["allocation_skipped"] = skipped
            write_sidecar(paths[level], format="gguf", quantization=gate, source_model=model_dir, extra=extra)
    return [paths[q] for q in [*quants, *(m for m in mixes if m not in quants)]]


def _auto_fallback(config) -> str | None:
    from edgekit.export.mix import auto_fallback

    return auto_fallback(config)


def _calibration(tokenizer, calibration_ids):
    """The rows the sensitivity probe runs on: the imatrix's calibration, else the built-in corpus."""
    if calibration_ids is not None:
        return calibration_ids
    from edgekit.data import training_set

    return training_set(tokenizer, seq_len=256, max_sequences=16)


def _check_representable(config, tokenizer, model_dir: Path) -> None:
    """Raise now, before minutes of work, if the tokenizer or RoPE settings have no faithful GGUF form."""
    if problems := gguf_refusals(config):
        raise UnsupportedModelError(f"{model_dir}: cannot export to GGUF: " + "; ".join(problems))
    for warning in gguf_warnings(config, config.max_position_embeddings):
        log.warning("%s: %s", model_dir, warning)
    try:
        vocab = vocab_from_tokenizer(tokenizer)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{model_dir}: {exc}") from None
    if len(vocab.tokens) > config.vocab_size:
        raise InputError(
            model_dir, f"tokenizer has {len(vocab.tokens)} tokens but the model only {config.vocab_size} embeddings"
        )


def _imatrix_for(model, tokenizer, imatrix, calibration_ids, source: str | None):
    """(values, provenance) from a file, or computed from calibration rows (default: built-in corpus)."""
    from edgekit.export.imatrix import compute_imatrix, load_imatrix_file
    from edgekit.fileio import sha256_json

    if imatrix != "auto":
        values, saved = load_imatrix_file(Path(imatrix))
        info = {"dataset": saved.get("dataset", "unknown"), "tokens": saved.get("tokens"), "file": saved["file"]}
        info["chunks"] = int(saved.get("chunks") or 0)
    else:
        if calibration_ids is None:
            from edgekit.data import training_set

            calibration_ids = training_set(tokenizer, seq_len=256, max_sequences=16)
            source = source or "edgekit built-in corpus (training split)"
        values, tokens = compute_imatrix(model, calibration_ids)
        info = {"dataset": source or "calibration rows given by the caller", "tokens": tokens}
        info["chunks"] = len(calibration_ids)
    info["entries"] = len(values)
    info["sha256"] = sha256_json({k: v.tolist() for k, v in sorted(values.items())})[:16]
    return values, info


def _imatrix_metadata(info: dict[str, Any] | None) -> dict[str, str | int]:
    """Provenance keys as llama-quantize writes them (quantize.imatrix.*; counts as integers)."""
    if not info:
        return {}
    return {
        "quantize.imatrix.file": info.get("file") or f"edgekit:{info['sha256']}",
        "quantize.imatrix.dataset": info["dataset"],
        "quantize.imatrix.entries_count": int(info["entries"]),
        "quantize.imatrix.chunks_count": int(info["chunks"]),
    }
