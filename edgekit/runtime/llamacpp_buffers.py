"""Whether llama.cpp may keep weights in its extra CPU buffer types on this machine.

llama.cpp moves quantized weights into "extra" CPU buffers when the processor has a faster layout
for them: repacked (interleaved) Q4_0/IQ4_NL/Q8_0 rows on Arm and AVX2, and AMX tiles on Intel
Xeons with AMX. They are only a speed-up: the products are the same as with plain buffers. On this
project's development machines (AMX-capable Xeons) the AMX path of llama-cpp-python 0.3.36 crashes
with a general protection fault in ``ggml_backend_amx_mul_mat`` on every quantized batch, while the
plain buffers compute correctly. Rather than switching the speed-up off everywhere (it matters on
the Arm boards edgekit targets), the first file opened on a machine is probed in a throw-away child
with the extra buffers; if that child dies and the same file runs without them, the machine is
remembered as one where they crash, and every later load on it uses plain buffers.

The decision is kept per (llama-cpp-python version, processor), so a fixed build probes again.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator


def host_key() -> str:
    """The llama-cpp-python version and the processor: what the extra-buffer decision depends on."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        llama_version = version("llama-cpp-python")
    except PackageNotFoundError:
        llama_version = "unknown"
    return f"llama-cpp-python {llama_version} on {_cpu_name()}"


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


@contextlib.contextmanager
def weight_buffers(extra: bool) -> Iterator[None]:
    """While ``Llama(...)`` runs inside this block, load weights with or without the extra buffers.

    llama-cpp-python builds its ``llama_model_params`` from ``llama_model_default_params()`` inside
    the constructor and offers no argument for ``use_extra_bufts``, so the default is wrapped for
    the duration of the block and restored after it.
    """
    if extra:
        yield
        return
    import llama_cpp.llama as llama_module

    low_level = llama_module.llama_cpp
    original = low_level.llama_model_default_params
    if not hasattr(original(), "use_extra_bufts"):  # an older build without extra buffer types
        yield
        return

    def plain_buffers():
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = plain_buffers
    try:
        yield
    finally:
        low_level.llama_model_default_params = original
