"""Peak resident memory of the current process, sampled by a background thread.

psutil's RSS is sampled every ``interval`` seconds; the OS's own high-water mark
(``getrusage().ru_maxrss``) is reported beside it as a cross-check, since a short spike can fall
between samples.
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
        """The kernel's high-water mark for this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(value if sys.platform == "darwin" else value * 1024)
