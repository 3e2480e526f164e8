"""Check a trainer checkpoint before ``--resume`` restores it.

A checkpoint can be cut short by a full disk or a copy, edited, or come from another model or run.
Restoring it blindly gives a traceback deep inside ``load_state_dict`` or, worse, a run that "resumes"
at a step its data never reached and reports a wrong step count. Everything is read from the
safetensors headers and ``state.json`` and compared with the model, optimizer and run at hand first;
each problem is one ``InputError`` naming the checkpoint file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.fileio import read_json
from edgekit.runtime.safetensors_check import check_safetensors


def check_checkpoint(ckpt: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Validate ``ckpt`` (``.../latest``) against ``model`` and ``optimizer``; return its ``state.json``."""
    state = _state(ckpt / "state.json")
    weights = check_safetensors(ckpt / "model.safetensors")
    weights = _with_tied_aliases(ckpt / "state.json", weights, state.get("tied", {}))
    _same_tensors(ckpt / "model.safetensors", weights, model.state_dict())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    moments = check_safetensors(ckpt / "optimizer.safetensors")
    for key, entry in moments.items():
        index, _, name = key.partition(".")
        if key == "_empty":
            continue
        if not index.isdigit() or int(index) >= len(params):
            raise InputError(ckpt / "optimizer.safetensors", f"entry {key!r} names no parameter of this optimizer")
        want = list(params[int(index)].shape)
        if name != "step" and entry["shape"] not in (want, []):
            raise InputError(
                ckpt / "optimizer.safetensors", f"entry {key!r} has shape {entry['shape']}, the parameter has {want}"
            )
    if (ckpt / "rng.safetensors").is_file():
        rng = check_safetensors(ckpt / "rng.safetensors")
        if rng.get("cpu", {}).get("dtype") != "U8":
            raise InputError(ckpt / "rng.safetensors", "no CPU random-generator state (uint8 'cpu' tensor)")
    return state


def check_resume_step(ckpt: Path, step: int, total_steps: int) -> None:
    """The checkpoint's step must lie within this run (a step past the end is another run's checkpoint)."""
    if step > total_steps:
        raise InputError(
            ckpt / "state.json",
            f"checkpoint is at step {step:,} but this run has {total_steps:,} steps (another run's checkpoint?)",
        )


def _state(path: Path) -> dict[str, Any]:
    state = read_json(path)
    if not isinstance(state, dict):
        raise InputError(path, "checkpoint state is not a JSON object")
    step, history, scalars = state.get("step"), state.get("history"), state.get("scalars")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise InputError(path, f"step is {step!r}, expected an integer >= 0")
    if not isinstance(scalars, dict):
        raise InputError(path, "scalars is missing or not an object")
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise InputError(path, "history is missing or not a list of objects")
    # one history entry per step taken: a step that disagrees with them was edited or comes from elsewhere
    if len(history) != step or (history and history[-1].get("step") != step):
        last = history[-1].get("step") if history else None
        raise InputError(path, f"step {step:,} disagrees with the history ({len(history)} entries, last step {last})")
    return state


def _with_tied_aliases(path: Path, saved: dict[str, dict], tied: Any) -> dict[str, dict]:
    """The stored tensors plus the tied ones stored once under another name ({alias: owner})."""
    if not isinstance(tied, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise InputError(path, "tied is not an object of tensor names")
    unknown = sorted(owner for owner in tied.values() if owner not in saved)
    if unknown:
        raise InputError(path, f"tied tensor {unknown[0]} is not in the checkpoint")
    return {**saved, **{alias: saved[owner] for alias, owner in tied.items()}}


def _same_tensors(path: Path, saved: dict[str, dict], expected: dict[str, Any]) -> None:
    """The checkpoint holds exactly the model's tensors, with the model's shapes."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        count = len(missing) + len(extra)
        raise InputError(path, f"checkpoint does not match this model ({what}; {count} names differ)")
    for name, tensor in expected.items():
        if saved[name]["shape"] != list(tensor.shape):
            raise InputError(
                path, f"tensor {name} has shape {saved[name]['shape']}, the model has {list(tensor.shape)}"
            )
