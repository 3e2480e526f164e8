"""ONNX Runtime quantization of an fp32 ONNX graph: dynamic int8 and int4 weight-only (MatMulNBits).

Only MatMul weights are quantized: they hold nearly all parameters of a decoder, and leaving
Gather (embeddings), norms and attention math in fp32 keeps the quality loss where it is cheap.
Both writers produce a single ``model.onnx`` when it fits the 2 GB protobuf limit, else external data.
"""

from __future__ import annotations

from pathlib import Path

_PROTOBUF_LIMIT = 2_000_000_000  # bytes; above this ONNX must keep weights in an external file


def _needs_external(model_path: Path) -> bool:
    size = sum(p.stat().st_size for p in model_path.parent.iterdir() if p.is_file())
    return size > _PROTOBUF_LIMIT


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8: per-output-channel int8 weights, activations quantized on the fly at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        use_external_data_format=_needs_external(src),
        extra_options={"MatMulConstBOnly": True},
    )
    return dst


def quantize_int4(src: Path, dst: Path, *, block_size: int = 32) -> Path:
    """4-bit weight-only: MatMul -> MatMulNBits, asymmetric, one fp32 scale + 4-bit zero per ``block_size`` weights.

    Our own writer (numpy): ONNX Runtime's ``MatMulNBitsQuantizer`` needs the extra ``onnx_ir`` package.
    """
    import onnx

    from edgekit.export.onnx_int4 import rewrite_matmuls_int4

    model = onnx.load(str(src))  # loads external data too
    rewrite_matmuls_int4(model, block_size)
    external = _needs_external(src)
    onnx.save_model(
        model,
        str(dst),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=dst.name + "_data",
    )
    return dst
