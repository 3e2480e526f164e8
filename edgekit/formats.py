"""Facts about export formats and quantization levels, one commented line per level.

Bits per weight (bpw) are the average storage cost including block scales, as llama.cpp reports
for Llama-family models (``llama-quantize`` output, 7B class) and ONNX Runtime's block layouts.
They feed size predictions in ``plan``; measured sizes replace them once a file exists.

This is the one table of levels: target profiles, the build config, preflight and the exporters
all ask it (``levels_for`` for what may be planned, ``export_levels`` for what this edgekit can
write), so a level the exporter cannot produce is refused in seconds, before any training.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import Problem


@dataclass(frozen=True)
class QuantLevel:
    name: str  # as users type it: "Q4_K_M", "int8"
    format: str  # "gguf" | "onnx"
    bits_per_weight: float  # average, scales included
    k_quant: bool  # needs rows divisible by 256 (llama.cpp QK_K)
    max_mean_kl: float  # default verification gate: mean KL(fp ‖ quantized), nats/token
    min_top1: float  # default verification gate: top-1 agreement with the fp model
    exportable: bool = True  # edgekit's exporter writes it (False: known for planning only)


LEVELS: dict[str, QuantLevel] = {
    q.name: q
    for q in (
        QuantLevel("F32", "gguf", 32.0, False, 1e-5, 0.99),  # plain float32
        QuantLevel("F16", "gguf", 16.0, False, 1e-3, 0.98),  # IEEE half
        QuantLevel("BF16", "gguf", 16.0, False, 5e-3, 0.97),  # bfloat16: 8-bit mantissa
        QuantLevel("Q8_0", "gguf", 8.5, False, 5e-3, 0.95),  # 32-weight blocks, fp16 scale: 8 + 16/32
        QuantLevel("Q6_K", "gguf", 6.5625, True, 2e-2, 0.92),  # super-blocks of 256, 6-bit
        QuantLevel("Q5_K_M", "gguf", 5.69, True, 4e-2, 0.90),  # Q5_K with Q6_K for attn_v/ffn_down halves
        QuantLevel("Q5_K_S", "gguf", 5.54, True, 5e-2, 0.88),  # Q5_K throughout
        QuantLevel("Q4_K_M", "gguf", 4.89, True, 1e-1, 0.85),  # Q4_K with Q6_K for attn_v/ffn_down halves
        QuantLevel("Q4_K_S", "gguf", 4.58, True, 1.2e-1, 0.83),  # Q4_K throughout
        QuantLevel("Q4_0", "gguf", 4.5, False, 1.5e-1, 0.80),  # 32-weight blocks, fp16 scale: 4 + 16/32
        QuantLevel("Q3_K_M", "gguf", 3.91, True, 2.5e-1, 0.75),  # 3-bit K-quant, mixed
        QuantLevel("fp32", "onnx", 32.0, False, 1e-5, 0.99),  # float32 ONNX
        QuantLevel("fp16", "onnx", 16.0, False, 1e-3, 0.98),  # float16 ONNX (onnxruntime-genai builder)
        QuantLevel("int8", "onnx", 8.0, False, 2e-2, 0.92),  # dynamic int8, per-tensor or per-channel scale
        QuantLevel("int4", "onnx", 4.5, False, 1.5e-1, 0.80),  # MatMulNBits block 32, fp32 scale + 4-bit zero
    )
}

FORMATS = ("gguf", "onnx")


def level(name: str) -> QuantLevel:
    """Look up a level by name (case-insensitive); ``KeyError`` lists the known ones."""
    for key, value in LEVELS.items():
        if key.lower() == name.lower():
            return value
    raise KeyError(f"unknown quantization level {name!r}; known: {', '.join(LEVELS)}")


def levels_for(fmt: str) -> list[str]:
    """Names of the levels a format knows (for planning and target ladders), in table order."""
    return [q.name for q in LEVELS.values() if q.format == fmt]


def export_levels(fmt: str) -> list[str]:
    """Names of the levels edgekit can export in a format, in table order."""
    return [q.name for q in LEVELS.values() if q.format == fmt and q.exportable]


def level_problems(fmt: str, levels: list[str] | tuple[str, ...], source: str, key: str) -> list[Problem]:
    """One Problem (naming ``source`` and ``key``) for the levels of ``fmt`` that cannot be exported."""
    known = export_levels(fmt)
    bad = [q for q in levels if q not in known]
    if not bad:
        return []
    return [Problem(source, key, f"{', '.join(bad)}: not an exportable {fmt} level; choose from {', '.join(known)}")]
