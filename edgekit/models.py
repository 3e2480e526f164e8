"""Load teachers and students, and build tiny models for tests.

Security by default: weights load from safetensors only (``use_safetensors=True``), and remote code
runs only when the caller asks for it with ``trust_remote_code=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, UnsupportedModelError
from edgekit.loading import options_for

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def __getattr__(name: str) -> Any:
    """``SUPPORTED_ARCHITECTURES``: the registry's model_types (edgekit.arch), kept for old callers."""
    if name == "SUPPORTED_ARCHITECTURES":
        from edgekit.arch import supported

        return supported()
    raise AttributeError(name)


def _is_local(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return Path(text).exists() or text.startswith((".", "/", "~")) or (os.sep in text and text.count("/") > 1)


def _describe_load_failure(name_or_path: str | Path, exc: Exception) -> str:
    """Turn transformers' long exceptions into one line a user can act on."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "ignore_mismatched_sizes" in text:  # transformers points at a report it logged, not at the weight
        return "a weight's shape does not match the model's config.json (see the load report above)"
    if _is_local(name_or_path):
        return f"cannot load model folder ({text})"
    if any(word in text.lower() for word in ("connect", "offline", "resolve", "network", "couldn't")):
        return (
            "is not a local folder and the Hugging Face Hub cannot be reached; download it elsewhere "
            "and pass the local folder path instead"
        )
    return f"cannot load from the Hugging Face Hub ({text})"


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick TCP connect to the Hub endpoint, instead of transformers' minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_available(name_or_path: str | Path) -> None:
    """Raise a one-line InputError now if a model can be neither found locally nor downloaded."""
    if _is_local(name_or_path):
        if not Path(name_or_path).expanduser().exists():
            raise InputError(name_or_path, "folder not found")
        return
    from huggingface_hub import try_to_load_from_cache

    opts = options_for(name_or_path)
    cached = try_to_load_from_cache(str(name_or_path), "config.json", cache_dir=opts.cache_dir, revision=opts.revision)
    if not isinstance(cached, str) and not _hub_reachable():
        raise InputError(
            name_or_path,
            "is not a local folder and the Hugging Face Hub cannot be reached; download it elsewhere "
            "and pass the local folder path instead",
        )


def load_config(name_or_path: str | Path, trust_remote_code: bool = False) -> Any:
    """The model's HF config, without loading any weights."""
    from transformers import AutoConfig

    ensure_available(name_or_path)
    opts = options_for(name_or_path)  # the user's --revision/--cache-dir/--trust-remote-code for this model
    try:
        return AutoConfig.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code or opts.trust_remote_code, **opts.hub_kwargs()
        )
    except Exception as exc:  # transformers raises OSError/ValueError/EnvironmentError variants
        raise InputError(name_or_path, _describe_load_failure(name_or_path, exc)) from None


def check_architecture(config: Any, source: str | Path) -> str:
    """Return the config's model_type, or raise naming the supported ones (edgekit.arch registry)."""
    from edgekit.arch import family_of

    return family_of(config, source).model_type


def load_model(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM (safetensors only) in eval mode. ``dtype`` defaults to float32."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.runtime.safetensors_check import check_loading_info

    ensure_available(name_or_path)
    opts = options_for(name_or_path)  # the user's loading options apply to the model they named
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(name_or_path),
            dtype=dtype or (opts.torch_dtype() if opts.dtype != "float32" else torch.float32),
            use_safetensors=True,
            trust_remote_code=trust_remote_code or opts.trust_remote_code,
            output_loading_info=True,
            **opts.hub_kwargs(),
        )
    except Exception as exc:
        raise InputError(name_or_path, _describe_load_failure(name_or_path, exc)) from None
    check_loading_info(name_or_path, info)  # a missing weight is an error, never a random initialisation
    return model.to(device).eval()


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the model's (fast) tokenizer."""
    from transformers import AutoTokenizer

    ensure_available(name_or_path)
    opts = options_for(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code or opts.trust_remote_code, **opts.hub_kwargs()
        )
    except Exception as exc:
        raise InputError(name_or_path, _describe_load_failure(name_or_path, exc)) from None


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path) -> Path:
    """``save_pretrained`` model (safetensors) and tokenizer into ``folder`` atomically."""
    from edgekit.fileio import atomic_path

    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(folder)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct weights (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny test model. Defaults make every 2-D weight row a multiple of 256 (K-quants)."""

    arch: str = "llama"  # any model_type in the edgekit.arch registry
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    seed: int = 0


def tiny_config(spec: TinySpec) -> Any:
    """A HF config of the requested family and shape (the family's ``tiny`` keys applied)."""
    from transformers import AutoConfig

    from edgekit.arch import REGISTRY

    if spec.arch not in REGISTRY:
        raise UnsupportedModelError(f"tiny arch {spec.arch!r}; choose one of {', '.join(REGISTRY)}")
    family = REGISTRY[spec.arch]
    kwargs: dict[str, Any] = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        rope_theta=spec.rope_theta,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    kwargs.update(family.tiny)
    if "query_pre_attn_scalar" in AutoConfig.for_model(spec.arch).to_dict():
        kwargs["query_pre_attn_scalar"] = kwargs["head_dim"]
    if family.swa_cache:  # alternate sliding / full so both kinds are exercised
        kwargs["layer_types"] = [
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(spec.num_layers)
        ]
    if "rope_theta" not in (AutoConfig.for_model(spec.arch).rope_parameters or {}):
        del kwargs["rope_theta"]  # per-layer-type bases (Gemma 3): keep the family's local/global pair
    return AutoConfig.for_model(spec.arch, **kwargs)


def tiny_model(spec: TinySpec | None = None, **overrides: Any) -> PreTrainedModel:
    """A random-initialised model in seconds (deterministic for a given seed).

    Weights are scaled up from HF's 0.02 init so logits are far from uniform and comparisons
    (KL, top-1) between an export and PyTorch are meaningful.
    """
    import torch
    from transformers import AutoModelForCausalLM

    spec = TinySpec(**{**(spec or TinySpec()).__dict__, **overrides})
    torch.manual_seed(spec.seed)
    config = tiny_config(spec)
    config.initializer_range = 0.08
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomise_small_tensors(model)
    return model.eval()


def _randomise_small_tensors(model) -> None:
    """Give biases and norm weights random values (HF inits them to 0 / 1 / 0 for Gemma's 1+w), so
    exporters that drop, misplace or mis-offset them are caught by parity tests."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.05)


def peak_tiny_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, steps: int = 60) -> PreTrainedModel:
    """``model`` after ``steps`` AdamW steps (lr 3e-3, 8 × 64 tokens) on the built-in corpus, in place.

    A random tiny model's next-token distributions are nearly flat, so whether a quantized copy
    keeps its top-1 is decided by near-ties; a few seconds of training make them peaked like a real
    model's, and quality thresholds mean something (measured: Q8_0 of a random tiny Llama reaches
    91 % top-1, of the trained one 99 %).
    """
    import torch

    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents

    train, _ = split_documents(builtin_documents()[:600])
    rows = pack(tokenize_documents(tokenizer, train), 64, 256)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = rows[(step * 8) % (len(rows) - 8) :][:8]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()
