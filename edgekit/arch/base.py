"""What a Llama-like decoder family is, declared as data: one ``Family`` per HF ``model_type``.

Every family edgekit builds students of, prunes or exports is a stack of decoder layers, each with
attention (q, k, v, o projections, possibly fused into one ``qkv_proj``), a gated MLP (gate, up,
down, possibly fused into one ``gate_up_proj``) and RMSNorms. The differences between families are
facts: which norms exist and where, whether RMSNorm multiplies by ``w`` or ``1 + w``, q/k norms per
head or over the full width, biases, embedding scale, soft-capping, per-layer attention patterns,
and the GGUF side (llama.cpp architecture, rotary permute, loader rules). A ``Family`` holds those
facts; stages ask it instead of branching on ``model_type``.

Tensors are addressed by *logical* names (``q``, ``k``, ``v``, ``o``, ``gate``, ``up``, ``down``,
norms by their HF module name), each with the kind of index along every axis (``hidden``, ``q`` =
query rows, ``kv`` = key/value rows, ``ffn``, ``head_dim``, ``vocab``). A fused parameter is seen as
row slices (views), so surgery, importance and sparsity work on the same names for every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Axis kinds: what an index along a tensor axis refers to.
HIDDEN, Q, KV, FFN, HEAD_DIM, VOCAB = "hidden", "q", "kv", "ffn", "head_dim", "vocab"

ATTN_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
MLP_PROJ = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
# logical projection -> (row kind, column kind) of its weight [out, in]
PROJ_AXES = {
    "q": (Q, HIDDEN),
    "k": (KV, HIDDEN),
    "v": (KV, HIDDEN),
    "o": (HIDDEN, Q),
    "gate": (FFN, HIDDEN),
    "up": (FFN, HIDDEN),
    "down": (HIDDEN, FFN),
}


@dataclass(frozen=True)
class Family:
    """One decoder family. Fields are facts about the HF modules and llama.cpp; see the module doc.

    ``refuse_gguf`` / ``warn_gguf`` / ``write_gguf_hparams`` / ``embedding_scale`` are small hooks
    taking the HF config; everything else is plain data.
    """

    model_type: str  # HF config.model_type
    # where things live (dotted attribute paths from the CausalLM)
    layers_path: str = "model.layers"
    embed_path: str = "model.embed_tokens"
    final_norm_path: str = "model.norm"
    lm_head_path: str = "lm_head"
    # structure
    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")  # each [hidden]
    norm_offset: float = 0.0  # RMSNorm multiplies by (offset + w): 1.0 for Gemma
    qk_norm: str = "none"  # none | head ([head_dim], shared by heads) | full ([q rows] / [kv rows])
    attn_bias: str = "config"  # config (q,k,v,o follow config.attention_bias) | qkv (always) | none
    mlp_bias: bool = False  # whether config.mlp_bias adds MLP biases
    fused_qkv: bool = False  # one self_attn.qkv_proj = [q; k; v] rows
    fused_gate_up: bool = False  # one mlp.gate_up_proj = [gate; up] rows
    hidden_probe: str | None = "input_layernorm"  # module whose output shows hidden activations
    per_layer_lists: tuple[str, ...] = ("layer_types",)  # config lists indexed by layer
    embedding_scale: Callable[[Any], float] = lambda config: 1.0  # input embeddings × this
    swa_cache: bool = False  # llama.cpp keeps only the window's tokens in sliding layers' KV cache
    # GGUF / llama.cpp
    gguf_arch: str | None = None  # llama.cpp architecture name (gguf.MODEL_ARCH_NAMES), None: no GGUF
    gguf_permute_qk: bool = False  # llama.cpp rotates interleaved pairs: permute HF's half-split rows
    gguf_refusal: str = ""  # why there is no GGUF when gguf_arch is None
    refuse_gguf: Callable[[Any], list[str]] = lambda config: []  # loader rules this config breaks
    warn_gguf: Callable[[Any, int], list[str]] = lambda config, context: []  # runs, but differs
    write_gguf_hparams: Callable[[Any, Any], None] = lambda writer, config: None  # family keys
    gguf_extra_tensors: Callable[[Any], dict[str, Any]] = lambda config: {}  # name -> np.ndarray
    gguf_needs_output: bool = False  # llama.cpp requires output.weight even when tied (written as a copy)
    gguf_own_rope_scaling: bool = False  # the family writes its RoPE scaling itself (Phi-3 longrope)
    tiny: dict[str, Any] = field(default_factory=dict)  # extra config keys for tiny test models

    # -- modules -----------------------------------------------------------------------------
    def layers(self, model) -> list:
        """The decoder layers of a loaded CausalLM, in order."""
        return list(_attr(model, self.layers_path))

    def embed(self, model):
        return _attr(model, self.embed_path)

    def final_norm(self, model):
        return _attr(model, self.final_norm_path)

    def lm_head(self, model):
        return _attr(model, self.lm_head_path)

    def projection(self, layer, name: str, config) -> tuple[Any, Any, Any]:
        """(parameter, row slice or None, bias parameter or None) of a logical projection."""
        if name in ATTN_PROJ:
            attn = layer.self_attn
            if self.fused_qkv and name != "o":
                q, kv = q_rows(config), kv_rows(config)
                start = {"q": 0, "k": q, "v": q + kv}[name]
                proj = attn.qkv_proj
                return proj.weight, slice(start, start + (q if name == "q" else kv)), proj.bias
            proj = getattr(attn, ATTN_PROJ[name])
            return proj.weight, None, proj.bias
        mlp = layer.mlp
        if self.fused_gate_up and name != "down":
            ffn = config.intermediate_size
            start = 0 if name == "gate" else ffn
            return mlp.gate_up_proj.weight, slice(start, start + ffn), mlp.gate_up_proj.bias
        proj = getattr(mlp, MLP_PROJ[name])
        return proj.weight, None, proj.bias

    def logical_tensors(self, layer, config) -> dict[str, tuple[Any, slice | None, tuple[str, ...]]]:
        """Every parameter of one layer as {logical name: (parameter, row slice, axis kinds)}.

        Weights are ``<proj>.weight``, biases ``<proj>.bias``, norms their HF module name; together
        they cover every element of every parameter of the layer exactly once.
        """
        out: dict[str, tuple[Any, slice | None, tuple[str, ...]]] = {}
        for name, axes in PROJ_AXES.items():
            weight, rows, bias = self.projection(layer, name, config)
            out[f"{name}.weight"] = (weight, rows, axes)
            if bias is not None:
                out[f"{name}.bias"] = (bias, rows, axes[:1])
        for norm in self.layer_norms:
            out[norm] = (getattr(layer, norm).weight, None, (HIDDEN,))
        if self.qk_norm != "none":
            kinds = ((HEAD_DIM,), (HEAD_DIM,)) if self.qk_norm == "head" else ((Q,), (KV,))
            out["q_norm"] = (layer.self_attn.q_norm.weight, None, kinds[0])
            out["k_norm"] = (layer.self_attn.k_norm.weight, None, kinds[1])
        return out


def _attr(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def head_dim(config) -> int:
    """Size of one attention head: the config's ``head_dim`` when set, else hidden / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def q_rows(config) -> int:
    return config.num_attention_heads * head_dim(config)


def kv_rows(config) -> int:
    return config.num_key_value_heads * head_dim(config)


def rope_dims(config) -> int:
    """Rotary dimensions per head: head_dim × partial_rotary_factor (Phi-4-mini rotates 3/4)."""
    params = getattr(config, "rope_parameters", None) or {}
    factor = params.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) or 1.0
    return int(head_dim(config) * factor)


def rope_theta(config, layer_type: str = "full_attention") -> float:
    """RoPE base of a layer type (transformers 5 keeps per-type parameters for Gemma 3)."""
    params = getattr(config, "rope_parameters", None) or {}
    if layer_type in params and isinstance(params[layer_type], dict):
        params = params[layer_type]
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def layer_types(config) -> list[str]:
    """Per-layer attention kind (``full_attention`` / ``sliding_attention``), full when unstated."""
    types = getattr(config, "layer_types", None)
    if types:
        return list(types)
    window = getattr(config, "sliding_window", None)
    uses = getattr(config, "use_sliding_window", True)  # qwen2/3 gate the window with this flag
    kind = "sliding_attention" if window and uses else "full_attention"
    return [kind] * config.num_hidden_layers


def keep_layers(config, kept: list[int]) -> None:
    """Make ``config``'s per-layer lists describe only layers ``kept`` (in place), and its layer count."""
    from edgekit.arch import family_of

    for key in family_of(config).per_layer_lists:
        values = getattr(config, key, None)
        if values and len(values) == config.num_hidden_layers:
            setattr(config, key, [values[i] for i in kept])
    if getattr(config, "max_window_layers", None) is not None:
        config.max_window_layers = min(config.max_window_layers, len(kept))
    config.num_hidden_layers = len(kept)
