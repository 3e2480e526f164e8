"""Block-wise 4-bit weight quantization into ONNX Runtime's ``com.microsoft.MatMulNBits`` operator.

Layout (as ONNX Runtime's contrib-op spec defines it), for a weight B of shape [K, N]:
- ``B_q``: uint8 [N, n_blocks, block_size / 2], two 4-bit codes per byte, lower nibble first,
  K zero-padded up to ``n_blocks * block_size``;
- ``scales``: float32 [N * n_blocks];
- ``zero_points``: uint8 [N * ceil(n_blocks / 2)], 4-bit zeros packed the same way.
Dequantized weight = (code - zero) * scale. Asymmetric min/max per block, range widened to include 0.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_MAX_CODE = 15  # 4 bits


def quantize_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize B [K, N] -> (packed codes [N, n_blocks, block_size/2], scales [N*n_blocks], packed zeros)."""
    k, n = weight.shape
    n_blocks = -(-k // block_size)
    padded = np.zeros((n_blocks * block_size, n), dtype=np.float32)
    padded[:k] = weight
    blocks = padded.T.reshape(n, n_blocks, block_size)  # [N, n_blocks, block]
    lo = np.minimum(blocks.min(axis=2), 0.0)
    hi = np.maximum(blocks.max(axis=2), 0.0)
    scale = (hi - lo) / _MAX_CODE
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, _MAX_CODE).astype(np.uint8)
    codes = np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, _MAX_CODE).astype(np.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    if n_blocks % 2:
        zero = np.concatenate([zero, np.zeros((n, 1), dtype=np.uint8)], axis=1)
    zeros_packed = zero[:, 0::2] | (zero[:, 1::2] << 4)
    return packed, scale.reshape(-1), zeros_packed.reshape(-1)


def dequantize_blocks(packed: np.ndarray, scales: np.ndarray, zeros: np.ndarray, k: int) -> np.ndarray:
    """Inverse of ``quantize_blocks`` (for tests): -> B [K, N] float32."""
    n, n_blocks, half = packed.shape
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, n_blocks, half * 2).astype(np.float32)
    z = zeros.reshape(n, -1)
    z = np.stack([z & 0x0F, z >> 4], axis=-1).reshape(n, -1)[:, :n_blocks].astype(np.float32)
    s = scales.reshape(n, n_blocks)
    w = (codes - z[..., None]) * s[..., None]
    return w.reshape(n, -1)[:, :k].T.copy()


def rewrite_matmuls_int4(model: onnx.ModelProto, block_size: int) -> int:
    """Replace every MatMul whose B is a 2-D float32 initializer with MatMulNBits; returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    new_nodes, replaced, dropped = [], 0, set()
    for node in graph.node:
        b = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if b is None or len(b.dims) != 2 or b.data_type != onnx.TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(b)
        packed, scales, zeros = quantize_blocks(weight, block_size)
        base = f"{node.name or b.name}_int4"
        graph.initializer.extend(
            [
                numpy_helper.from_array(packed, f"{base}.q"),
                numpy_helper.from_array(scales, f"{base}.scales"),
                numpy_helper.from_array(zeros, f"{base}.zeros"),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{base}.q", f"{base}.scales", f"{base}.zeros"],
                list(node.output),
                name=base,
                domain="com.microsoft",
                K=weight.shape[0],
                N=weight.shape[1],
                bits=4,
                block_size=block_size,
            )
        )
        uses[b.name] -= 1
        if uses[b.name] == 0:
            dropped.add(b.name)
        replaced += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return replaced
