"""GPU runs: which backend options offload to CUDA, and a preflight that fails in seconds.

llama.cpp offloads every layer (``n_gpu_layers=-1``) when llama-cpp-python was built with CUDA;
ONNX Runtime uses the CUDA execution provider of the onnxruntime-gpu wheel. Without either, a GPU
run is refused up front with one line saying what to install, rather than silently timing the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailable

CUDA_PROVIDER = "CUDAExecutionProvider"


def backend_options(artifact: str | Path, threads: int, gpu: bool) -> dict[str, Any]:
    """Keyword arguments for ``open_backend`` of ``artifact`` (CPU threads, GPU offload when asked)."""
    from edgekit.runtime.detect import detect_format

    options: dict[str, Any] = {"n_threads": threads}
    if gpu:
        fmt = detect_format(artifact)
        if fmt == "gguf":
            options["n_gpu_layers"] = -1
        elif fmt == "onnx":
            options["provider"] = CUDA_PROVIDER
    return options


def llamacpp_has_cuda() -> bool:
    """Whether the installed llama-cpp-python can offload layers to a GPU."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def ort_has_cuda() -> bool:
    """Whether ONNX Runtime offers the CUDA execution provider (onnxruntime-gpu) to ONNX Runtime GenAI.

    ONNX packages run through onnxruntime-genai, whose CUDA build (onnxruntime-genai-cuda) needs
    onnxruntime-gpu underneath; both must say yes.
    """
    try:
        import onnxruntime
        import onnxruntime_genai
    except ImportError:
        return False
    return CUDA_PROVIDER in onnxruntime.get_available_providers() and bool(onnxruntime_genai.is_cuda_available())


_NEEDS = {
    "gguf": (llamacpp_has_cuda, "llama-cpp-python built with CUDA (CMAKE_ARGS=-DGGML_CUDA=on)"),
    "onnx": (
        ort_has_cuda,
        "onnxruntime-genai-cuda and onnxruntime-gpu (pip install 'edgekit[gpu]', then uninstall onnxruntime"
        " and onnxruntime-genai)",
    ),
}


def require_cuda(fmt: str, what: str | Path) -> None:
    """Raise ``BackendUnavailable`` (naming ``what``) unless format ``fmt`` can run on CUDA here."""
    if fmt not in _NEEDS:
        raise BackendUnavailable(f"{what}: --gpu measures GGUF or ONNX artifacts, not {fmt!r}")
    available, install = _NEEDS[fmt]
    if not available():
        raise BackendUnavailable(f"{what}: a GPU run needs {install}; no CUDA backend is installed here")


def check_gpu(artifacts: list[str | Path]) -> None:
    """Fail in seconds, naming the first artifact whose backend cannot use CUDA here."""
    from edgekit.runtime.detect import detect_format

    for artifact in artifacts:
        require_cuda(detect_format(artifact), artifact)
