"""Module-level jobs for tests/test_isolate.py (the spawned child imports them by name)."""

from __future__ import annotations

import os
import sys
import time

from edgekit.errors import InputError


def add(a: int, b: int, scale: int = 1) -> int:
    return (a + b) * scale


def abort_with_message(text: str) -> None:
    """What a C++ ``std::terminate`` does: print to fd 2, then SIGABRT."""
    os.write(2, f"terminate called after throwing an instance of 'std::out_of_range'\n  what():  {text}\n".encode())
    os.abort()


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def exit_quietly() -> None:
    os._exit(7)


def raise_input_error(path: str) -> None:
    raise InputError(path, "bad header")


def raise_value_error() -> None:
    raise ValueError("plain bug")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def stderr_noise_then_value() -> str:
    print("llama.cpp log line", file=sys.stderr, flush=True)
    return "fine"
