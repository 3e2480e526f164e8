"""edgekit.isolate: a native crash in a child process becomes a one-line NativeCrash naming the file."""

from __future__ import annotations

import sys

import isolate_jobs as jobs
import pytest

from edgekit.errors import EdgekitError, InputError, NativeCrash
from edgekit.isolate import check_exit, run_isolated


def test_result_comes_back():
    assert run_isolated(jobs.add, 2, 3, scale=4, path="x.gguf") == 20


def test_abort_becomes_native_crash_naming_the_file_and_the_last_line(tmp_path):
    target = tmp_path / "model.gguf"
    with pytest.raises(NativeCrash) as info:
        run_isolated(jobs.abort_with_message, "vector::_M_range_check", path=target, action="verifying it")
    message = str(info.value)
    assert message.startswith(f"{target}: the runtime crashed (SIGABRT) while verifying it")
    assert message.endswith("what():  vector::_M_range_check")
    assert "\n" not in message
    assert info.value.path == str(target) and isinstance(info.value, EdgekitError)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_segfault_becomes_native_crash():
    with pytest.raises(NativeCrash, match=r"m\.onnx: the runtime crashed \(SIGSEGV\) while opening it"):
        run_isolated(jobs.segfault, path="m.onnx")


def test_exit_without_answer_is_reported():
    with pytest.raises(NativeCrash, match="exited with status 7 without finishing"):
        run_isolated(jobs.exit_quietly, path="m.gguf")


def test_edgekit_errors_cross_with_their_class_and_fields():
    with pytest.raises(InputError) as info:
        run_isolated(jobs.raise_input_error, "a/b.gguf", path="a/b.gguf")
    assert str(info.value) == "a/b.gguf: bad header"
    assert info.value.path == "a/b.gguf" and info.value.problem == "bad header"


def test_other_exceptions_keep_their_type_and_the_child_traceback():
    with pytest.raises(ValueError, match="plain bug") as info:
        run_isolated(jobs.raise_value_error, path="x")
    assert any("raise_value_error" in note for note in getattr(info.value, "__notes__", []))


def test_timeout_kills_the_child():
    with pytest.raises(NativeCrash, match=r"did not finish within 1 s while loading"):
        run_isolated(jobs.sleep, 60, path="x.gguf", action="loading", timeout=1)


def test_child_stderr_is_kept_out_of_the_parent(capfd):
    assert run_isolated(jobs.stderr_noise_then_value, path="x") == "fine"
    assert "llama.cpp log line" not in capfd.readouterr().err


def test_check_exit_for_subprocesses():
    check_exit(0, "f.gguf", "quantizing it")
    with pytest.raises(NativeCrash, match=r"f\.gguf: the runtime crashed \(SIGABRT\) while quantizing it: boom"):
        check_exit(-6, "f.gguf", "quantizing it", b"log\nboom\n")
    with pytest.raises(NativeCrash, match="exited with status 3"):
        check_exit(3, "f.gguf", "quantizing it")
