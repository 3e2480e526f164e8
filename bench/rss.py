"""Peak resident memory of a whole process tree, sampled: for benchmarks of stages that start children.

``/usr/bin/time -v`` and ``VmHWM`` see one process; an export that runs llama.cpp's quantizer, a
verification child or a builder has its memory spread over several. This module sums the RSS (bytes)
of a root process and all its descendants every ``interval`` seconds (0.1 s by default) and keeps the
maximum of that sum. RSS counts file-backed pages that are mapped and resident (a memory-mapped
checkpoint or GGUF file), since those are what a machine must hold; pages shared between processes
are counted once per process, so the sum is an upper bound. A spike shorter than the interval can fall
between samples; the root's own kernel high-water mark (``VmHWM``) is reported beside it as a floor.

Two ways to use it:

    with TreeRss() as mem:              # this process and its children
        work()
    mem.peak_bytes, mem.wall_s

    result = run_measured(["python", "x.py"])   # a command: its rc, wall time and tree peak
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil


def tree_rss_bytes(root: psutil.Process) -> int:
    """Sum of RSS in bytes of ``root`` and every descendant alive now (processes gone mid-read count 0)."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _hwm_bytes(pid: int) -> int:
    """The kernel's high-water mark of one process's RSS in bytes (``VmHWM``), 0 where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeRss:
    """Context manager sampling the RSS sum of a process tree; ``peak_bytes`` and ``wall_s`` after exit.

    ``pid`` defaults to this process (so children started inside the block are included).
    """

    def __init__(self, pid: int | None = None, interval: float = 0.1):
        self.pid = pid or os.getpid()
        self.interval = interval
        self.peak_bytes = 0
        self.root_hwm_bytes = 0
        self.wall_s = 0.0
        self._stop = threading.Event()
        self._root = psutil.Process(self.pid)

    def sample(self) -> int:
        """Take one reading now; returns it (bytes)."""
        now = tree_rss_bytes(self._root)
        self.peak_bytes = max(self.peak_bytes, now)
        self.root_hwm_bytes = max(self.root_hwm_bytes, _hwm_bytes(self.pid))
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeRss:
        self._start = time.perf_counter()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.sample()
        self._stop.set()
        self._thread.join()
        self.wall_s = time.perf_counter() - self._start
        return False


@dataclass
class Measured:
    """One command's outcome: exit status, wall time (s), peak tree RSS (bytes), root's VmHWM (bytes)."""

    rc: int
    wall_s: float
    peak_rss_bytes: int
    root_hwm_bytes: int


def run_measured(cmd: Sequence[str], *, interval: float = 0.1, **popen) -> Measured:
    """Run ``cmd`` to completion, sampling its process tree's RSS every ``interval`` seconds.

    The root's VmHWM is monotonic, so its last reading before exit is a floor that also covers spikes
    the sampler missed in the root (except in its last ``interval``; a zombie has no memory to read).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), **popen)
    root = psutil.Process(proc.pid)
    peak, hwm = 0, 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(root))
        hwm = max(hwm, _hwm_bytes(proc.pid))
        time.sleep(interval)
    return Measured(rc=proc.returncode, wall_s=time.perf_counter() - start, peak_rss_bytes=peak, root_hwm_bytes=hwm)
