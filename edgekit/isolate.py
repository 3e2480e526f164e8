"""Run native-runtime work in a child process, so a C++ crash is an error and not the end of edgekit.

llama.cpp and ONNX Runtime are C++ libraries: a file they cannot handle may make them call
``abort()`` (an uncaught ``std::out_of_range``, a failed ``GGML_ASSERT``) or touch bad memory. In
the edgekit process that would kill the CLI, its progress and any cleanup with it. Anything that
opens a file edgekit did not just prove harmless (verification of a fresh export, loading a user's
file) can instead run here:

    from edgekit.isolate import run_isolated
    report = run_isolated(measure, path, texts, path=path, action="verifying it in llama.cpp")

``measure(path, texts)`` runs in a fresh interpreter (``python -c``, not ``multiprocessing``: no
state copied from this process, no fork of a threaded torch, and the caller's ``__main__`` is
never re-run, so scripts need no ``if __name__ == "__main__"`` guard). Its return value comes
back; an exception it raises comes back as the same exception type; if the child dies by a
signal or exits without answering, ``NativeCrash`` is raised: one line naming the file, the
signal, what was being done and the last line the library printed (e.g. ``what():
vector::_M_range_check``).

Rules for the callable: a module-level function (it is imported by name in the child), arguments
and result that pickle (paths, strings, lists, numpy arrays), and no reliance on state set up in
the parent (the child imports the function's module afresh: keep heavy imports like torch out of
that module's top level when the job does not need them). A child costs about 0.1-0.3 s plus the
imports; batch work into one call rather than many.

``check_exit`` gives the same one-line error for a ``subprocess`` run of a native tool.
"""

from __future__ import annotations

import importlib
import io
import pickle
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edgekit.errors import EdgekitError, NativeCrash

T = TypeVar("T")
_TAIL_BYTES = 8192  # of the child's stderr kept for the error message
# The child: read (sys.path, fn, args, kwargs) from stdin, write (kind, payload) to argv[1].
_CHILD = "from edgekit.isolate import _child_main; _child_main()"


def run_isolated(
    fn: Callable[..., T],
    *args: Any,
    path: str | Path,
    action: str = "opening it",
    timeout: float | None = None,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)`` run in a child Python process; its result, or its exception re-raised.

    ``path`` (the file the work concerns) and ``action`` (what was being done to it, e.g. "loading
    it in llama.cpp") only word the error. ``timeout`` (seconds, None: no limit) kills a child that
    hangs and raises ``NativeCrash``. The child's stderr (native libraries' logs) goes to a
    temporary file: its last line is quoted when the child crashes, and it is dropped otherwise.
    """
    payload = pickle.dumps(list(sys.path)) + pickle.dumps((fn, args, kwargs))
    with tempfile.TemporaryDirectory(prefix="edgekit-isolate-") as tmp:
        log, result = Path(tmp) / "stderr.txt", Path(tmp) / "result.pickle"
        with open(log, "wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(result)], stdin=subprocess.PIPE, stdout=err, stderr=err
            )
            try:
                child.communicate(payload, timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise NativeCrash(path, f"did not finish within {timeout:g} s while {action}") from None
            except BaseException:  # Ctrl-C: never leave the child running
                child.kill()
                child.wait()
                raise
        if child.returncode != 0 or not result.is_file():
            code = child.returncode if child.returncode != 0 else 1
            raise NativeCrash(path, f"{_describe_exit(code)} while {action}{_last_line(log)}")
        kind, value = pickle.loads(result.read_bytes())  # written by our own child, never by a user
    if kind == "ok":
        return value
    raise _rebuild(value)


def check_exit(returncode: int, path: str | Path, action: str, stderr: str | bytes = "") -> None:
    """Raise ``NativeCrash`` if a native tool run by ``subprocess`` did not exit 0.

    A negative ``returncode`` is a signal (Python's convention); the last non-empty line of
    ``stderr`` is quoted.
    """
    if returncode == 0:
        return
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    raise NativeCrash(path, f"{_describe_exit(returncode)} while {action}{_quote(text)}")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the runtime crashed ({name})"
    return f"the runtime exited with status {code} without finishing"


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, log.stat().st_size - _TAIL_BYTES))
            return _quote(fh.read().decode("utf-8", "replace"))
    except OSError:
        return ""


def _quote(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f": {lines[-1][:300]}" if lines else ""


# ---- the child side -------------------------------------------------------------------------------


def _child_main() -> None:
    """Entry point of the child process: run the pickled call, write its outcome to ``argv[1]``."""
    path, fn, args, kwargs = _load_call()
    try:
        message: tuple[str, Any] = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # every failure goes back to the parent, which decides
        message = ("error", _portable(exc))
    try:
        data = pickle.dumps(message)
    except Exception as exc:  # the result did not pickle
        data = pickle.dumps(
            ("error", _portable(TypeError(f"the isolated call's result could not be sent back: {exc}")))
        )
    Path(path).write_bytes(data)


def _load_call() -> tuple[str, Callable[..., Any], tuple, dict]:
    """The call from stdin: the parent's ``sys.path`` first (so the function's module imports), then it."""
    stream = io.BytesIO(sys.stdin.buffer.read())
    sys.path[:] = pickle.load(stream)
    fn, args, kwargs = pickle.load(stream)
    return sys.argv[1], fn, args, kwargs


def _portable(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data: its class by name, args, attributes and traceback text."""
    state = {k: v for k, v in vars(exc).items() if _picklable(v)} if hasattr(exc, "__dict__") else {}
    return {
        "module": type(exc).__module__,
        "name": type(exc).__qualname__,
        "args": tuple(a if _picklable(a) else repr(a) for a in exc.args),
        "state": state,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _picklable(value: Any) -> bool:
    import pickle

    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _rebuild(data: dict[str, Any]) -> BaseException:
    """The child's exception, same class and attributes, without calling its ``__init__``.

    (Many exception classes, edgekit's included, take other arguments than the ``args`` they
    store, so ``cls(*args)`` would fail.) An unknown class becomes an ``EdgekitError`` with the
    message. Errors that are not ``EdgekitError`` carry the child's traceback as a note.
    """
    try:
        cls = getattr(importlib.import_module(data["module"]), data["name"])
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(cls)
        exc = cls.__new__(cls, *data["args"])
        exc.args = data["args"]
        exc.__dict__.update(data["state"])
    except Exception:
        exc = EdgekitError(data["message"])
    if not isinstance(exc, EdgekitError):
        exc.add_note("in an isolated child process:\n" + data["traceback"])
    return exc
