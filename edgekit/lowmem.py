"""A model resident in its checkpoint precision (bf16/fp16) that computes in float32, one block at a time.

A 1 B-parameter checkpoint is 2.5 GB in bf16 and 5 GB in fp32; loading it in fp32 to compute a
reference (importance matrix, verification logits, a pruning score, a distillation teacher) doubles
the memory for nothing: every bf16 or fp16 value is exactly representable in fp32, so upcasting a
block's weights just before it runs gives the fp32 model's arithmetic bit for bit. ``fp32_compute``
does that with forward hooks on each *unit* (the embedding, each decoder layer, the final norm,
the output head and any other module outside the layers that owns weights): on entry the unit's
floating tensors are replaced by fp32 copies, on exit the originals are put back (no rounding, the
same ``Parameter`` objects, so tied weights and other hooks keep working). Two units would cost
a lot as whole fp32 copies (1 GB each for Llama-3.2-1B's 128 256 x 2048 table): an embedding gets
an fp32 table with only the rows it looks up written (the rest is never backed by memory), and a
large output head is multiplied in blocks of rows. Peak memory is the resident model + one fp32
decoder layer (0.24 GB for 1B) + activations and logits.

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
CHUNK_ELEMENTS = 1 << 24  # weights upcast at a time in a large Linear outside the layers: 64 MiB as fp32


def checkpoint_dtype(config: Any) -> torch.dtype:
    """The precision the checkpoint stores (config ``dtype`` / ``torch_dtype``), float32 if unstated."""
    name = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(name).removeprefix("torch.") if name is not None else "float32"
    return RESIDENT_DTYPES.get(name, torch.float32)


def load_resident(name_or_path: str | Path, *, dtype: torch.dtype | None = None):
    """Load a causal LM in its checkpoint precision, ready for ``fp32_compute``.

    ``dtype`` overrides; so does the user's ``--dtype`` (``edgekit.loading``) when it is not
    float32: the weights are then held in that dtype, and still computed in fp32.
    """
    from edgekit.loading import options_for
    from edgekit.models import load_config, load_model

    opts = options_for(name_or_path)
    if dtype is None:
        dtype = opts.torch_dtype() if opts.dtype != "float32" else checkpoint_dtype(load_config(name_or_path))
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


def _upcast(unit: torch.nn.Module, saved: dict[int, list], args: tuple) -> None:
    _refuse_gradients()
    if id(unit) in saved:  # re-entered (a tied module called twice): already fp32
        return
    originals: list = []
    saved[id(unit)] = originals  # filled as it goes, so an error half way still restores
    for tensor in [*unit.parameters(), *unit.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            originals.append((tensor, tensor.data))
            lookup = isinstance(unit, torch.nn.Embedding) and tensor is unit.weight and args
            tensor.data = _rows_in_fp32(tensor.data, args[0]) if lookup else tensor.data.float()


def _rows_in_fp32(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """An fp32 table of ``weight``'s shape where only the rows ``ids`` looks up are written.

    An embedding reads only those rows, so its output is the fp32 table's; the other rows are
    never touched, and the kernel never backs untouched pages with memory: the fp32 copy of a
    128 256-row embedding costs the rows looked up (kilobytes), not 1 GB.
    """
    table = torch.empty(weight.shape, dtype=torch.float32)
    wanted = ids.reshape(-1).unique()
    table[wanted] = weight[wanted].float()
    return table


def _restore(unit: torch.nn.Module, saved: dict[int, list]) -> None:
    for tensor, data in saved.pop(id(unit), []):
        tensor.data = data


def _refuse_gradients() -> None:
    if torch.is_grad_enabled():
        raise GradientsNotSupported("fp32_compute runs forward passes only; wrap the call in torch.no_grad()")


def _blockwise(linear: torch.nn.Linear):
    """A forward for a large Linear outside the layers (the output head): fp32 in blocks of output rows.

    Each block of at most ``CHUNK_ELEMENTS`` weights is upcast, multiplied and dropped, so the
    head's fp32 copy (1 GB for a 128k x 2048 head) is never made whole; the output is the same
    product, block by block (equal to the whole product within fp32 rounding of the kernel).
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        _refuse_gradients()
        weight, bias = linear.weight, linear.bias
        x = x.float()
        step = max(1, CHUNK_ELEMENTS // weight.shape[1])
        out = x.new_empty((*x.shape[:-1], weight.shape[0]))
        for i in range(0, weight.shape[0], step):
            b = None if bias is None else bias[i : i + step].float()
            out[..., i : i + step] = torch.nn.functional.linear(x, weight[i : i + step].float(), b)
        return out

    return forward


@contextlib.contextmanager
def fp32_compute(model) -> Iterator[Any]:
    """Inside the block, ``model``'s forward runs in float32 one unit at a time (see module docstring).

    A no-op for a model already in float32. The resident tensors are restored when each unit
    finishes, and all of them when the block exits, even after an error. A Linear unit of more
    than ``CHUNK_ELEMENTS`` weights (the output head) runs block by block instead (``_blockwise``).
    """
    saved: dict[int, list] = {}
    hooks, patched = [], []
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        for unit in compute_units(model):
            if isinstance(unit, torch.nn.Linear) and unit.weight.numel() > CHUNK_ELEMENTS:
                patched.append((unit, unit.__dict__.get("forward")))
                unit.forward = _blockwise(unit)
                continue
            hooks.append(unit.register_forward_pre_hook(lambda m, a, u=unit: _upcast(u, saved, a)))
            hooks.append(unit.register_forward_hook(lambda m, a, o, u=unit: _restore(u, saved)))
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for unit, previous in patched:
            if previous is None:
                del unit.forward
            else:
                unit.forward = previous
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
