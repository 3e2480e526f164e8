"""RoPE scaling in GGUF: which Hugging Face ``rope_scaling`` kinds llama.cpp reproduces, and how.

* ``linear`` (position interpolation): ``rope.scaling.type = linear`` and the factor; llama.cpp
  divides positions by it exactly as transformers does.
* ``yarn`` with its default ramp (beta_fast 32, beta_slow 1) and attention scale: type, factor and
  original context length; llama.cpp derives the same ramp and the same 0.1·ln(factor) + 1 scale.
* ``llama3`` (Llama 3.1 / 3.2): no scaling keys; instead a ``rope_freqs.weight`` tensor holds one
  divisor per rotary frequency, which llama.cpp's llama graph applies to the base frequencies.
  The divisors are computed here from the same formula transformers uses for its inverse frequencies.
Other kinds (``dynamic``, ``longrope``, yarn with custom betas or scales, ...) are refused with a
message: a GGUF that silently computes different frequencies would pass for the model and is not.
Each supported kind is checked against PyTorch by a test (F32 export, mean KL <= 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError

# rope_scaling kind -> GGUF architectures that reproduce it
SUPPORTED_ROPE_SCALING = {
    "linear": ("llama", "qwen2"),  # rope.scaling.type = linear, rope.scaling.factor
    "yarn": ("llama", "qwen2"),  # rope.scaling.type = yarn, factor, original_context_length
    "llama3": ("llama",),  # rope_freqs.weight tensor (llama.cpp loads it for the llama graph only)
}


# yarn keys whose non-default values llama.cpp would not reproduce from type/factor/context alone
_YARN_DEFAULTS = {"beta_fast": 32, "beta_slow": 1, "truncate": True}
_YARN_CUSTOM = ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate")


def rope_scaling_of(config: Any, arch: str) -> dict[str, Any] | None:
    """The config's rope scaling dict with ``kind`` set, None when there is none, or raise if unsupported."""
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return None
    if arch not in SUPPORTED_ROPE_SCALING.get(kind, ()):
        supported = ", ".join(f"{k} ({'/'.join(a)})" for k, a in SUPPORTED_ROPE_SCALING.items())
        raise UnsupportedModelError(
            f"rope scaling {kind!r} on a {arch} model cannot be represented in GGUF faithfully; supported: {supported}"
        )
    custom = [k for k in _YARN_CUSTOM if scaling.get(k) not in (None, _YARN_DEFAULTS.get(k))]
    if kind == "yarn" and (custom or "original_max_position_embeddings" not in scaling):
        why = f"custom {', '.join(custom)}" if custom else "no original_max_position_embeddings"
        raise UnsupportedModelError(f"yarn rope scaling with {why} cannot be represented in GGUF faithfully")
    return {**scaling, "kind": kind}


def write_rope_scaling(writer, scaling: dict[str, Any] | None) -> None:
    """Add the scaling keys a kind needs (``llama3`` needs none: its factors are a tensor)."""
    import gguf

    if not scaling or scaling["kind"] == "llama3":
        return
    kind = gguf.RopeScalingType.LINEAR if scaling["kind"] == "linear" else gguf.RopeScalingType.YARN
    writer.add_rope_scaling_type(kind)
    writer.add_rope_scaling_factor(float(scaling["factor"]))
    if scaling["kind"] == "yarn":
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


def rope_factors(config: Any, scaling: dict[str, Any] | None) -> np.ndarray | None:
    """Per-frequency divisors [head_dim / 2] for llama3 scaling (None for other kinds).

    Frequency i with wavelength w: divisor 1 when w < L/high, ``factor`` when w > L/low, and a
    smooth blend between, where L is the original context length and low/high the config's
    ``low_freq_factor`` / ``high_freq_factor``.
    """
    if not scaling or scaling["kind"] != "llama3":
        return None
    from edgekit.arch import head_dim as head_dim_of
    from edgekit.arch import rope_theta

    head_dim = head_dim_of(config)
    base = rope_theta(config)
    factor = float(scaling["factor"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    original = float(scaling["original_max_position_embeddings"])
    divisors = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * base ** (i / head_dim)
        if wavelength < original / high:
            divisors.append(1.0)
        elif wavelength > original / low:
            divisors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            divisors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(divisors, dtype=np.float32)
