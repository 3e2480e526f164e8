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
from edgekit.export.gguf_tokenizer import vocab_from_tokenizer, write_vocab
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


def _write_hparams(writer, config, arch: str, name: str) -> None:
    import gguf

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
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return
    if kind not in ("linear", "yarn"):
        raise UnsupportedModelError(f"rope scaling {kind!r} cannot be represented (supported: linear, yarn)")
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(float(scaling["factor"]))
    if kind == "yarn" and "original_max_position_embeddings" in scaling:
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


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
        write_vocab(writer, vocab)
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
        writer.add_tensor(name, packed, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)


IMATRIX_LEVELS = {"Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q4_0"}


def export_gguf(
    model_dir: str | Path,
    out_dir: str | Path,
    quants: list[str] | tuple[str, ...] = ("F32",),
    *,
    name: str | None = None,
    imatrix: str | Path | None = "auto",
    calibration_ids=None,
    type_overrides: dict[str, str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Export a HF folder to one GGUF file per level in ``out_dir``; returns their paths (same order).

    ``imatrix="auto"`` computes an importance matrix from ``calibration_ids`` [n, seq] (default: 16
    rows of the built-in corpus) for the low-bit levels; ``None`` quantizes without one.
    """
    import tempfile

    from edgekit.export.quantize import FTYPES, quantize_gguf
    from edgekit.models import check_architecture, load_config, load_model, load_tokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    unknown = [q for q in quants if q not in FTYPES]
    if unknown:
        raise InputError(model_dir, f"unknown GGUF level(s) {', '.join(unknown)}; choose from {', '.join(FTYPES)}")
    check_architecture(load_config(model_dir), model_dir)
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    name = name or model_dir.name
    provenance = {"source": str(model_dir)}
    paths = {q: out_dir / f"{name}-{q}.gguf" for q in quants}
    imx, imx_info = None, None
    if imatrix is not None and any(q in IMATRIX_LEVELS for q in quants):
        imx, imx_info = _imatrix_for(model, tokenizer, imatrix, calibration_ids)
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        base = paths.get("F32") or Path(tmp) / "base-F32.gguf"
        write_gguf(model, tokenizer, base, "F32", name, provenance)
        for level in quants:
            if level in DIRECT_LEVELS:
                if level != "F32":
                    write_gguf(model, tokenizer, paths[level], level, name, provenance)
                info = None
            else:
                use = imx if level in IMATRIX_LEVELS else None
                meta = _imatrix_metadata(imx_info) if use else {}
                quantize_gguf(base, paths[level], level, imatrix=use, type_overrides=type_overrides, metadata=meta)
                info = imx_info if use else None
            write_sidecar(
                paths[level],
                format="gguf",
                quantization=level,
                source_model=model_dir,
                extra={"imatrix": info, "type_overrides": type_overrides or {}},
            )
    return [paths[q] for q in quants]


def _imatrix_for(model, tokenizer, imatrix, calibration_ids):
    from edgekit.export.imatrix import compute_imatrix, load_imatrix_file

    if imatrix != "auto":
        return load_imatrix_file(Path(imatrix))
    if calibration_ids is None:
        from edgekit.data import training_set

        calibration_ids = training_set(tokenizer, seq_len=256, max_sequences=16)
    values, tokens = compute_imatrix(model, calibration_ids)
    from edgekit.fileio import sha256_json

    info = {
        "dataset": "calibration rows",
        "tokens": tokens,
        "chunks": len(calibration_ids),
        "entries": len(values),
        "sha256": sha256_json({k: v.tolist() for k, v in values.items()})[:16],
    }
    return values, info


def _imatrix_metadata(info: dict[str, Any] | None) -> dict[str, str]:
    """Provenance keys as llama-quantize writes them (quantize.imatrix.*)."""
    if not info:
        return {}
    return {
        "quantize.imatrix.dataset": info["dataset"],
        "quantize.imatrix.entries_count": str(info["entries"]),
        "quantize.imatrix.chunks_count": str(info["chunks"]),
        "quantize.imatrix.file": f"edgekit:{info['sha256']}",
    }
