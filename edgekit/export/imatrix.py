"""Importance matrix for llama.cpp's quantizer, computed in PyTorch.

For every matrix multiplication y = x·Wᵀ, llama.cpp's imatrix is the mean over calibration tokens of
x² for each input column (it accumulates Σx² and the number of tokens, then divides). Quantization
then spends precision on the columns whose inputs are large, which is where rounding errors cost
the most output error.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekit.export.gguf import gguf_name


@torch.no_grad()
def compute_imatrix(model, calibration: torch.Tensor, batch: int = 4) -> tuple[dict[str, np.ndarray], int]:
    """({GGUF tensor name: mean x² per input column [in_features]}, tokens seen) over rows [n, seq]."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        name = gguf_name(f"{module_name}.weight")
        if name is None or name.endswith("?"):
            continue

        def hook(mod, args, name=name):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        for start in range(0, len(calibration), batch):
            model(input_ids=calibration[start : start + batch])
    finally:
        for h in hooks:
            h.remove()
    tokens = int(calibration.numel())
    return {name: (sums[name] / counts[name]).cpu().numpy().astype(np.float32) for name in sums}, tokens


def save_imatrix_file(path, values: dict[str, np.ndarray], info: dict) -> None:
    """Store an imatrix as safetensors (values) with its provenance in the metadata."""
    import json

    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in values.items()}, str(path), metadata={"info": json.dumps(info)})


def load_imatrix_file(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read an imatrix written by ``save_imatrix_file``."""
    import json

    from safetensors import safe_open

    from edgekit.errors import InputError

    try:
        with safe_open(str(path), "np") as fh:
            values = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
            info = json.loads((fh.metadata() or {}).get("info", "{}"))
    except Exception as exc:
        raise InputError(path, f"not an edgekit imatrix file ({exc})") from None
    return values, {**info, "file": str(path)}
