"""Hugging Face (llama / mistral / qwen2) -> GGUF, written with the ``gguf`` package.

F32, F16 and BF16 files are written directly; quantized levels are made from the F32 file by
llama.cpp's own quantizer (``edgekit.export.quantize``), with an importance matrix for the low-bit
levels. Every file is written under a temporary name and renamed, with a JSON sidecar beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, UnsupportedModelError
from edgekit.export.gguf_rope import rope_factors, rope_scaling_of, write_rope_scaling
from edgekit.export.gguf_tokenizer import pad_vocab, vocab_from_tokenizer, write_vocab
from edgekit.export.sidecar import write_sidecar
from edgekit.fileio import atomic_path

# HF model_type -> llama.cpp architecture. Mistral runs as llama (same graph, its window is unused).
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
# Architectures whose rotary embedding llama.cpp applies to interleaved pairs: HF's q/k rows are
# stored half-split (rotate_half), so they are permuted on the way out.
PERMUTE_QK = {"llama"}
# HF parameter suffix inside a decoder layer -> GGUF tensor name inside ``blk.N``.
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
DIRECT_LEVELS = {"F32": np.float32, "F16": np.float16, "BF16": None}  # written without llama.cpp
FILE_TYPES = {"F32": 0, "F16": 1, "BF16": 32}


def gguf_name(hf_name: str) -> str | None:
    """GGUF tensor name of a HF parameter (None for buffers GGUF does not store)."""
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        return f"blk.{parts[2]}.{LAYER_TENSORS.get('.'.join(parts[3:]), '?')}"
    return None


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF half-split rotary rows -> interleaved pairs, per head ([n_heads*head_dim, ...])."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model, arch: str) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every weight, permuted where llama.cpp expects it."""
    c = model.config
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        name = gguf_name(hf_name)
        if name is None:
            continue
        if name.endswith("?"):
            raise UnsupportedModelError(f"tensor {hf_name!r} has no GGUF counterpart")
        data = tensor.detach().float().cpu().numpy()
        if arch in PERMUTE_QK and name.split(".")[-2] in ("attn_q", "attn_k"):
            data = permute_rotary(data, c.num_attention_heads if "attn_q" in name else c.num_key_value_heads)
        yield name, data
    factors = rope_factors(c, rope_scaling_of(c, arch))
    if factors is not None:  # llama3-style scaling: per-frequency divisors llama.cpp reads as a tensor
        yield "rope_freqs.weight", factors


def _write_hparams(writer, config, arch: str, name: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    write_rope_scaling(writer, rope_scaling_of(config, arch))


def write_gguf(
    model, tokenizer, path: Path, level: str = "F32", name: str = "model", metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` as an F32 / F16 / BF16 GGUF at ``path`` (atomically)."""
    import gguf

    model_type = model.config.model_type
    if model_type not in GGUF_ARCH:
        raise UnsupportedModelError(
            f"architecture {model_type!r} cannot be exported to GGUF; supported: " + ", ".join(GGUF_ARCH)
        )
    arch = GGUF_ARCH[model_type]
    vocab = vocab_from_tokenizer(tokenizer)  # fails before anything is written
    if len(vocab.tokens) > model.config.vocab_size:
        raise InputError(
            path, f"tokenizer has {len(vocab.tokens)} tokens but the model only {model.config.vocab_size} embeddings"
        )
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        _write_hparams(writer, model.config, arch, name)
        writer.add_file_type(FILE_TYPES[level])
        write_vocab(writer, pad_vocab(vocab, model.config.vocab_size))
        for key, value in (metadata or {}).items():
            writer.add_string(f"edgekit.{key}", str(value))
        for tensor_name, data in gguf_tensors(model, arch):
            _add_tensor(writer, tensor_name, data, level)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _add_tensor(writer, name: str, data: np.ndarray, level: str) -> None:
    import gguf

    if data.ndim == 1 or level == "F32":  # norms and biases stay F32, as llama.cpp expects
        writer.add_tensor(name, data.astype(np.float32))
    elif level == "F16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        packed = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.BF16)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.BF16)  # shape from the bytes


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
) -> list[Path]:
    """Export a HF folder to one GGUF file per level in ``out_dir``; returns their paths (same order).

    ``imatrix="auto"`` computes an importance matrix from ``calibration_ids`` [n, seq] (default: 16
    rows of the built-in corpus) for the low-bit levels; ``None`` quantizes without one; a path
    loads a saved one (``<name>-imatrix.safetensors``, written beside the files whenever one is
    computed, or a GGUF imatrix from llama.cpp's ``llama-imatrix``).
    ``type_overrides`` ({regex on GGUF tensor names: GGML type}, e.g. ``{"^output\\.weight$": "Q8_0"}``)
    applies to every quantized level. ``provenance`` (string pairs, written as ``edgekit.<key>``)
    defaults to the source folder. Every input is checked before anything is computed or written.
    """
    from edgekit.export.checks import check_source
    from edgekit.export.quantize import FTYPES, check_overrides, quantize_gguf
    from edgekit.fileio import temporary_dir
    from edgekit.models import load_model, load_tokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    unknown = [q for q in quants if q not in FTYPES]
    if unknown:
        raise InputError(model_dir, f"unknown GGUF level(s) {', '.join(unknown)}; choose from {', '.join(FTYPES)}")
    check_overrides(type_overrides or {})
    config = check_source(model_dir)
    tokenizer = load_tokenizer(model_dir)
    _check_representable(config, tokenizer, model_dir)
    model = load_model(model_dir)
    name = name or model_dir.name
    provenance = provenance if provenance is not None else {"source": str(model_dir)}
    paths = {q: out_dir / f"{name}-{q}.gguf" for q in quants}
    imx, imx_info = None, None
    if imatrix is not None and any(q in IMATRIX_LEVELS for q in quants):
        imx, imx_info = _imatrix_for(model, tokenizer, imatrix, calibration_ids, calibration_source)
        if imatrix == "auto":  # kept for reuse: ``--imatrix <file>`` skips the forward passes next time
            from edgekit.export.imatrix import save_imatrix_file

            save_imatrix_file(out_dir / f"{name}-imatrix.safetensors", imx, imx_info)
    with temporary_dir(out_dir, "gguf") as tmp:  # inside --out, removed on failure and by the next run
        base = paths.get("F32") or Path(tmp) / "base-F32.gguf"
        write_gguf(model, tokenizer, base, "F32", name, provenance)
        for level in quants:
            overrides, info = {}, None
            if level in DIRECT_LEVELS:
                if level != "F32":
                    write_gguf(model, tokenizer, paths[level], level, name, provenance)
            else:
                use = imx if level in IMATRIX_LEVELS else None
                info, overrides = (imx_info if use else None), type_overrides or {}
                meta = _imatrix_metadata(imx_info) if use else {}
                quantize_gguf(base, paths[level], level, imatrix=use, type_overrides=overrides, metadata=meta)
            write_sidecar(
                paths[level],
                format="gguf",
                quantization=level,
                source_model=model_dir,
                extra={"imatrix": info, "type_overrides": overrides, "architecture": config.model_type},
            )
    return [paths[q] for q in quants]


def _check_representable(config, tokenizer, model_dir: Path) -> None:
    """Raise now, before minutes of work, if the tokenizer or RoPE settings have no faithful GGUF form."""
    try:
        vocab = vocab_from_tokenizer(tokenizer)
        rope_scaling_of(config, GGUF_ARCH[config.model_type])
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
