"""A model resident in its checkpoint precision (bf16/fp16) that computes in float32, one block at a time.

A 1 B-parameter checkpoint is 2.5 GB in bf16 and 5 GB in fp32; loading it in fp32 to compute a
reference (importance matrix, verification logits, a pruning score, a distillation teacher) doubles
the memory for nothing: every bf16 or fp16 value is exactly representable in fp32, so upcasting a
block's weights just before it runs gives the fp32 model's arithmetic bit for bit. ``fp32_compute``
does that with forward hooks on each *unit* (the embedding, each decoder layer, the final norm,
the output head and any other module outside the layers that owns weights): on entry the unit's
floating tensors are replaced by fp32 copies, on exit the originals are put back (no rounding, the
same ``Parameter`` objects, so tied weights and other hooks keep working). Peak memory is the
resident model + the largest unit in fp32 (for Llama-3.2-1B: the 128 256 x 2048 embedding, 1 GB)
+ activations.

    from edgekit.lowmem import load_resident, fp32_compute

    model = load_resident(path)            # bf16 if the checkpoint is bf16
    with torch.no_grad(), fp32_compute(model):
        logits = model(input_ids=rows).logits   # float32, equal to the fp32 model's

Non-persistent buffers (rotary ``inv_freq``, Gemma's ``embed_scale``) are not in the checkpoint:
they are computed when the model is built, and in a bf16 build some of them are bf16-rounded.
``load_resident`` rebuilds them in float32 so the logits equal the fp32 model's; the family-wide
test in tests/test_lowmem.py proves it for every registered family.

Forward only: a backward pass would keep every block's fp32 copy alive in autograd and send the
gradients to the fp32 copies, so ``fp32_compute`` refuses to run a unit with gradients enabled.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# Checkpoint dtypes kept resident; anything else (fp32, unknown) is loaded in float32 as before.
RESIDENT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def checkpoint_dtype(config: Any) -> torch.dtype:
    """The precision the checkpoint stores (config ``dtype`` / ``torch_dtype``), float32 if unstated."""
    name = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(name).removeprefix("torch.") if name is not None else "float32"
    return RESIDENT_DTYPES.get(name, torch.float32)


def load_resident(name_or_path: str | Path, *, dtype: torch.dtype | None = None):
    """Load a causal LM in its checkpoint precision (``dtype`` overrides), ready for ``fp32_compute``.

    Honours the user's loading options (``edgekit.loading``) like ``edgekit.models.load_model``;
    with a ``--dtype`` other than float32 the model is loaded in that dtype, as the user asked.
    """
    from edgekit.loading import options_for
    from edgekit.models import load_config, load_model

    opts = options_for(name_or_path)
    if dtype is None and opts.dtype != "float32":
        return load_model(name_or_path)  # the user chose the compute dtype: keep theirs
    config = load_config(name_or_path)
    dtype = dtype or checkpoint_dtype(config)
    model = load_model(name_or_path, dtype=dtype)
    if dtype != torch.float32:
        restore_fp32_buffers(model)
    return model


def restore_fp32_buffers(model) -> None:
    """Give a low-precision build the float32 non-persistent buffers an fp32 build would have.

    Such buffers are computed from the config when the model is built. Rotary frequencies are
    computed in float32 by transformers whatever the build's dtype; a scaled embedding's
    ``embed_scale`` (Gemma) is made in the build's dtype, but the module keeps the exact value as
    ``scalar_embed_scale``, from which the float32 buffer is rebuilt. Other low-precision buffers
    are upcast (``fp32_compute`` would upcast them on entry anyway).
    """
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is None or not buf.is_floating_point() or buf.dtype == torch.float32:
                continue
            exact = getattr(module, f"scalar_{name}", None)
            value = torch.tensor(float(exact), dtype=torch.float32) if exact is not None else buf.float()
            persistent = name not in module._non_persistent_buffers_set
            module.register_buffer(name, value.reshape(buf.shape), persistent=persistent)


def compute_units(model) -> list[torch.nn.Module]:
    """The modules upcast one at a time: each decoder layer, and every module outside the layers
    that owns floating tensors directly (embedding, final norm, output head, rotary, ...)."""
    from edgekit.arch import family_of

    layers = family_of(model.config).layers(model)
    inside = {id(m) for layer in layers for m in layer.modules()}
    units: list[torch.nn.Module] = list(layers)
    for module in model.modules():
        if id(module) in inside:
            continue
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(t.is_floating_point() for t in own):
            units.append(module)
    return units


class GradientsNotSupported(RuntimeError):
    """``fp32_compute`` runs forward passes only (a programming error, not a user's)."""


def _upcast(unit: torch.nn.Module, saved: dict[int, list]) -> None:
    if torch.is_grad_enabled():
        raise GradientsNotSupported("fp32_compute runs forward passes only; wrap the call in torch.no_grad()")
    if id(unit) in saved:  # re-entered (a tied module called twice): already fp32
        return
    originals = []
    for tensor in [*unit.parameters(), *unit.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            originals.append((tensor, tensor.data))
            tensor.data = tensor.data.float()
    saved[id(unit)] = originals


def _restore(unit: torch.nn.Module, saved: dict[int, list]) -> None:
    for tensor, data in saved.pop(id(unit), []):
        tensor.data = data


@contextlib.contextmanager
def fp32_compute(model) -> Iterator[Any]:
    """Inside the block, ``model``'s forward runs in float32 one unit at a time (see module docstring).

    A no-op for a model already in float32. The resident tensors are restored when each unit
    finishes, and all of them when the block exits, even after an error.
    """
    saved: dict[int, list] = {}
    hooks = []
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        for unit in compute_units(model):
            hooks.append(unit.register_forward_pre_hook(lambda m, a, u=unit: _upcast(u, saved)))
            hooks.append(unit.register_forward_hook(lambda m, a, o, u=unit: _restore(u, saved)))
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for key in list(saved):
            for tensor, data in saved.pop(key):
                tensor.data = data


def release(model) -> None:
    """Empty ``model``'s tensors in place and collect, so its memory is returned now.

    For the moment before a child process (a runtime opening an artifact, llama-quantize) starts:
    other references to the module (hooks, closures, a caller's name) then hold nothing big.
    The module is unusable afterwards.
    """
    for module in model.modules():
        for name in list(module._parameters):
            module._parameters[name] = None
        for name in list(module._buffers):
            module._buffers[name] = None
    gc.collect()


@contextlib.contextmanager
def fp32_everywhere(model) -> Iterator[Any]:
    """The whole model in float32 for the block (for passes that need gradients), then put back exactly.

    Costs the fp32 model (4 bytes per weight) for the block's duration; the same ``Parameter``
    objects hold the fp32 copies, so gradients land where the caller looks for them.
    """
    saved = []
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            saved.append((tensor, tensor.data))
            tensor.data = tensor.data.float()
    try:
        yield model
    finally:
        for tensor, data in saved:
            tensor.grad = None
            tensor.data = data
