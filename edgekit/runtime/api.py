"""``edgekit.load``: open any artifact edgekit makes (or a HF folder) as an ``EdgeModel``.

What runs it follows from what the path holds (``detect.detect_format``): a GGUF file goes to
llama.cpp, an ONNX folder to ONNX Runtime, a HF folder to PyTorch, a bundle folder to its
recommended artifact. A target profile turns into backend options (threads, GPU layers, execution
provider, context); arguments given explicitly always win over the profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, InputError, Problem
from edgekit.runtime.detect import detect_format, open_backend
from edgekit.runtime.model import EdgeModel

# Backend names users may type, mapped to the names open_backend knows.
BACKEND_ALIASES = {
    "auto": "auto",
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "gguf": "llama.cpp",
    "onnxruntime": "onnxruntime",
    "ort": "onnxruntime",
    "onnx": "onnxruntime",
    "torch": "torch",
    "pytorch": "torch",
    "hf": "torch",
}
# The backend that runs each format under backend="auto".
FORMAT_BACKEND = {"gguf": "llama.cpp", "onnx": "onnxruntime", "hf": "torch"}
# Target-profile settings -> backend options, per backend (a backend gets only those it understands).
TARGET_OPTIONS = {
    "llama.cpp": {"n_threads": "threads", "n_gpu_layers": "gpu_layers", "n_ctx": "context_length"},
    "onnxruntime": {"n_threads": "threads", "provider": "onnx_execution_provider", "n_ctx": "context_length"},
    "torch": {"n_threads": "threads", "n_ctx": "context_length"},
}


def load(
    path: str | Path,
    backend: str = "auto",
    target: Any = None,
    n_threads: int | None = None,
    n_ctx: int | None = None,
    verify_hash: bool = True,
    **options: Any,
) -> EdgeModel:
    """Open ``path`` (GGUF file, ONNX folder, HF folder or bundle) and return an ``EdgeModel``.

    ``backend``: "auto", "llama.cpp", "onnxruntime" or "torch". ``target``: a profile name, a path to a
    profile TOML or a loaded ``TargetProfile``; it sets threads, GPU offload (``n_gpu_layers``), the ONNX
    execution provider (``provider``) and the context (``n_ctx``). ``n_threads``, ``n_ctx`` and ``options``
    (passed to the backend constructor) win over the profile. A bundle's files are checked against its
    manifest's sha256 first (cached per file, see ``bundle_check``); ``verify_hash=False`` skips that.
    """
    kind = resolve_backend_name(backend)
    artifact = resolve_artifact(path, kind, verify_hash=verify_hash)
    if kind == "auto":
        kind = FORMAT_BACKEND[detect_format(artifact)]
    opts = target_options(target, kind) if target is not None else {}
    explicit = {"n_threads": n_threads, "n_ctx": n_ctx}
    opts.update({k: v for k, v in explicit.items() if v is not None})
    opts.update(options)
    return EdgeModel(open_backend(artifact, kind, **opts))


def resolve_backend_name(backend: str) -> str:
    """The canonical backend name for ``backend``; ``ConfigError`` listing the choices otherwise."""
    name = BACKEND_ALIASES.get(str(backend).lower())
    if name is None:
        choices = ", ".join(sorted({v for v in BACKEND_ALIASES.values()}))
        raise ConfigError([Problem("load()", "backend", f"unknown backend {backend!r}; choose one of {choices}")])
    return name


def target_options(target: Any, backend: str) -> dict[str, Any]:
    """Backend options a target profile implies for ``backend`` (see ``TARGET_OPTIONS``)."""
    from edgekit.targets import TargetProfile, load_target

    profile = target if isinstance(target, TargetProfile) else load_target(target)
    settings = {**profile.runtime.model_dump(), "context_length": profile.budget.context_length}
    return {option: settings[key] for option, key in TARGET_OPTIONS[backend].items()}


def resolve_artifact(path: str | Path, backend: str = "auto", verify_hash: bool = True) -> Path:
    """The model file or folder to open: ``path`` itself, or for a bundle its recommended artifact.

    With an explicit ``backend``, a bundle yields its first artifact of that backend's format instead.
    A bundle's manifest is checked against its schema, and (``verify_hash``) the chosen artifact's files
    against their sha256, so a tampered or truncated file is refused by name before a runtime maps it.
    """
    from edgekit.pipeline.bundle_check import load_manifest, verify_files

    path = Path(path).expanduser()
    if detect_format(path) != "bundle":
        return path
    manifest = load_manifest(path)
    artifact = _pick_artifact(path, manifest, backend)
    if verify_hash:
        verify_files(path, manifest, under=artifact.relative_to(path.resolve()).as_posix())
    return artifact


def _pick_artifact(path: Path, manifest: dict, backend: str) -> Path:
    manifest_path = path / "manifest.json"
    if backend != "auto":
        for candidate in _bundle_artifacts(path, manifest):
            if candidate.exists() and FORMAT_BACKEND.get(detect_format(candidate)) == backend:
                return candidate
        raise InputError(path, f"bundle has no artifact that the {backend} backend runs")
    artifact = _inside(path, manifest["recommended"]["artifact"], manifest_path)
    if not artifact.exists():
        raise InputError(artifact, "recommended artifact named in the bundle manifest is missing")
    return artifact


def _bundle_artifacts(bundle: Path, manifest: dict) -> list[Path]:
    """Recommended first, then ``manifest["artifacts"]`` (``{"path": ...}`` objects, as the schema says)."""
    names = []
    recommended = (manifest.get("recommended") or {}).get("artifact")
    if isinstance(recommended, str):
        names.append(recommended)
    names.extend(entry["path"] for entry in manifest.get("artifacts") or [])
    return [_inside(bundle, name, bundle / "manifest.json") for name in names]


def _inside(bundle: Path, relative: str, manifest_path: Path) -> Path:
    """``bundle / relative``, refusing paths that leave the bundle (a manifest must not point elsewhere)."""
    candidate = (bundle / relative).resolve()
    if not candidate.is_relative_to(bundle.resolve()):
        raise InputError(manifest_path, f"artifact path {relative!r} points outside the bundle")
    return candidate
