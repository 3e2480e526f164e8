"""Peak resident memory of the current process, sampled by a background thread; GPU memory on request.

psutil's RSS is sampled every ``interval`` seconds; the OS's own high-water mark
(``VmHWM`` on Linux) is reported beside it as a cross-check, since a short spike can fall between
samples. Sampling can be paused around timed regions: a thread waking every 2 ms on a machine whose
cores are all running llama.cpp's thread pool slowed decode by 8 % in our measurements, so the
harness samples warm-up runs (the same work) continuously and timed runs only at their edges.
``ru_maxrss`` is not used on Linux: a child started by fork keeps its parent's high-water mark
across exec, so a small child of a large harness would report the harness's size.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import psutil


class PeakMemory:
    """Context manager: ``peak_rss_bytes`` after exit (sampled), ``os_max_rss_bytes`` (kernel's)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak_rss_bytes = 0
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._proc = psutil.Process()

    def sample(self) -> None:
        """Take one reading now (also while paused)."""
        self.peak_rss_bytes = max(self.peak_rss_bytes, self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._running.wait()
            self.sample()
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No background sampling inside the block; one reading at each edge."""
        self.sample()
        self._running.clear()
        try:
            yield
        finally:
            self.sample()
            self._running.set()

    def __enter__(self) -> PeakMemory:
        self.peak_rss_bytes = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._running.set()
        self._thread.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, self._proc.memory_info().rss)
        return False

    @staticmethod
    def os_max_rss_bytes() -> int:
        """The kernel's high-water mark of this process's memory (VmHWM), else ru_maxrss."""
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return int(value if sys.platform == "darwin" else value * 1024)


def gpu_memory_bytes(pid: int | None = None) -> tuple[int, str] | None:
    """GPU memory held now: (bytes, how it was read), or None where no NVIDIA GPU can be queried.

    Per process (this pid) through NVML when it lists us; otherwise the whole device's used memory,
    since in a container NVML may not see our pid. The caller subtracts a baseline in that case.
    """
    pid = pid or os.getpid()
    try:
        import pynvml  # nvidia-ml-py, in the gpu extra
    except ImportError:
        return _nvidia_smi_bytes(pid)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory), "nvml-process"
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used), "nvml-device"
    finally:
        pynvml.nvmlShutdown()


def _nvidia_smi_bytes(pid: int) -> tuple[int, str] | None:
    """The same figure from ``nvidia-smi`` (MiB resolution) when NVML's Python binding is missing."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = [smi, "--format=csv,noheader,nounits"]
    try:
        apps = subprocess.run([*query, "--query-compute-apps=pid,used_memory"], capture_output=True, text=True)
        for line in apps.stdout.splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
                return int(fields[1]) * 2**20, "nvidia-smi-process"
        used = subprocess.run([*query, "--query-gpu=memory.used", "--id=0"], capture_output=True, text=True)
        return int(used.stdout.split()[0]) * 2**20, "nvidia-smi-device"
    except (OSError, ValueError, IndexError):
        return None


class GpuPeak:
    """Peak GPU memory over explicit ``sample()`` calls (after load, prefill, decode).

    Sampled at phase ends rather than by a thread: llama.cpp and ONNX Runtime allocate their GPU
    buffers at load and context creation, and an ``nvidia-smi`` call is far too slow for 2 ms sampling.
    A device-wide reading is reported relative to the baseline taken before the model was loaded.
    """

    def __init__(self) -> None:
        first = gpu_memory_bytes()
        self.available = first is not None
        self.baseline = first[0] if first and first[1].endswith("device") else 0
        self.peak_bytes = 0
        self.method = first[1] if first else None

    def sample(self) -> None:
        now = gpu_memory_bytes() if self.available else None
        if now is not None:
            used, self.method = now
            if self.method.endswith("device"):
                used -= self.baseline
            self.peak_bytes = max(self.peak_bytes, used)
