"""Check an ONNX model folder before ONNX Runtime sees it.

A truncated or random-byte ``model.onnx`` can make a native parser misbehave; parsing it first in
Python (protobuf, without external data) and checking that every external-data reference lies
inside its file turns those cases into one clear ``InputError`` naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import InputError

MODEL_FILE = "model.onnx"
_CHECKER_LIMIT = 1_000_000_000  # bytes; above this the full checker is slow, parse-only is enough


def model_file(path: str | Path) -> Path:
    """The ``model.onnx`` of a folder (or the file itself); ``InputError`` when absent."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise InputError(path, "not found")
    candidate = path / MODEL_FILE
    if candidate.is_file():
        return candidate
    others = sorted(path.glob("*.onnx"))
    if len(others) == 1:
        return others[0]
    raise InputError(path, f"folder holds no {MODEL_FILE}")


def _parse(path: Path):
    import onnx

    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes): not an ONNX model")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(path, f"not a valid ONNX model (cannot parse: {type(exc).__name__})") from None


def _check_external(model, folder: Path) -> None:
    """Every external-data reference names an existing file that covers offset + length."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        location = (folder / info.location).resolve()
        if folder.resolve() not in location.parents:
            raise InputError(folder / info.location, f"external data of {tensor.name!r} points outside the folder")
        if not location.is_file():
            raise InputError(location, f"external data file missing (needed by tensor {tensor.name!r})")
        end = (info.offset or 0) + (info.length or 0)
        if end > location.stat().st_size:
            raise InputError(
                location,
                f"external data truncated: tensor {tensor.name!r} needs bytes up to {end}, "
                f"file has {location.stat().st_size}",
            )


def _check_graph(model, path: Path) -> None:
    if not model.graph.node or not model.graph.output:
        raise InputError(path, "ONNX model has no graph (no nodes or outputs)")
    from onnx.external_data_helper import uses_external_data

    # the checker resolves external data against the working directory: run it on self-contained graphs only
    external = any(uses_external_data(t) for t in model.graph.initializer)
    if not external and model.ByteSize() < _CHECKER_LIMIT:
        import onnx

        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise InputError(path, f"ONNX model fails the checker: {str(exc).splitlines()[0][:200]}") from None


def check_onnx(path: str | Path) -> Path:
    """Validate an ONNX model folder or file; returns the model file's path, else raises ``InputError``."""
    file = model_file(path)
    model = _parse(file)
    _check_external(model, file.parent)
    _check_graph(model, file)
    return file
