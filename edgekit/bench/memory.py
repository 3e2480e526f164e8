"""Peak resident memory of the current process, sampled by a background thread.

psutil's RSS is sampled every ``interval`` seconds; the OS's own high-water mark
(``VmHWM`` on Linux) is reported beside it as a cross-check, since a short spike can fall between
samples. ``ru_maxrss`` is not used on Linux: a child started by fork keeps its parent's high-water
mark across exec, so a small child of a large harness would report the harness's size.
"""

from __future__ import annotations

import resource
import sys
import threading

import psutil


class PeakMemory:
    """Context manager: ``peak_rss_bytes`` after exit (sampled), ``os_max_rss_bytes`` (kernel's)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak_rss_bytes = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_bytes = max(self.peak_rss_bytes, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak_rss_bytes = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
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
