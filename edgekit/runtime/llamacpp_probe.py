"""Open a GGUF file once in a throw-away process before llama.cpp opens it in edgekit's own.

``gguf_model_check`` catches every inconsistency known to make llama.cpp assert, but llama.cpp has
more asserts than any list. So the first time a file is used, a spawned child (``edgekit.isolate``)
loads it and evaluates a 16-token batch; if llama.cpp aborts there, the user gets a one-line
``NativeCrash`` naming the file instead of a dead process. A file that passed is remembered under
its path, size, mtime and ctime, so the probe costs one child start per file, not per use.

This module imports nothing heavy at its top: the child imports it by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_CACHE = "llamacpp-probed.json"
HOSTS_WITHOUT_EXTRA_BUFFERS = "hosts without extra buffers"  # cache key: host_key() values
PROBE_TIMEOUT_S = 300.0  # loading a multi-GB file from a slow card can take a while; a hang cannot
PROBE_CONTEXT = 64  # tokens: enough to build the graph and run a short batch
PROBE_TOKENS = 16  # evaluated in one batch, as a prompt would be


class _NoChatHandler:
    """Stands in for llama-cpp-python's ``Jinja2ChatFormatter`` while a model opens (see ``templates_off``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def to_chat_handler(self) -> None:
        return None


@contextlib.contextmanager
def templates_off():
    """Keep llama-cpp-python from compiling the file's chat templates while ``Llama(...)`` runs.

    It compiles every ``tokenizer.chat_template*`` in the file with a Jinja environment that folds
    constants at compile time, so a template holding ``'x' * 2**31`` allocates 2 GiB before edgekit
    renders anything. edgekit renders chats itself (``edgekit.runtime.chat``, with limits) and never
    uses llama-cpp-python's chat handlers, so none are built.
    """
    import llama_cpp.llama_chat_format as chat_format

    original = chat_format.Jinja2ChatFormatter
    chat_format.Jinja2ChatFormatter = _NoChatHandler
    try:
        yield
    finally:
        chat_format.Jinja2ChatFormatter = original


def probe(path: str, extra_buffers: bool = True) -> int:
    """In the child: load ``path`` with llama.cpp, evaluate a short batch; return the vocabulary size."""
    from llama_cpp import Llama

    from edgekit.runtime.llamacpp_buffers import weight_buffers

    with templates_off(), weight_buffers(extra_buffers):
        llm = Llama(model_path=path, n_ctx=PROBE_CONTEXT, n_batch=PROBE_CONTEXT, n_gpu_layers=0, verbose=False)
    try:
        n_vocab = llm.n_vocab()
        # a batch of several tokens: some kernels (e.g. batched quantized matmuls) only run for more than one
        llm.eval([i % n_vocab for i in range(1, PROBE_TOKENS + 1)])
        return n_vocab
    finally:
        llm.close()


def probe_once(path: str | Path) -> bool:
    """Run ``probe`` isolated unless this exact file passed before; ``NativeCrash``/``InputError`` if not.

    Returns whether llama.cpp's extra CPU weight buffers may be used for this file on this machine
    (``edgekit.runtime.llamacpp_buffers``): when the probe dies with them and passes without them,
    the machine is remembered as one where they crash, and the file loads with plain buffers.
    """
    from edgekit.errors import InputError, NativeCrash
    from edgekit.isolate import run_isolated
    from edgekit.runtime.llamacpp_buffers import host_key

    path = Path(path)
    key, stamp = str(path.resolve()), _stamp(path)
    seen = _load()
    host = host_key()
    crashing_hosts = seen.get(HOSTS_WITHOUT_EXTRA_BUFFERS)
    crashing_hosts = crashing_hosts if isinstance(crashing_hosts, list) else []
    extra = host not in crashing_hosts
    if seen.get(key) == stamp:
        return extra
    action = "loading it in llama.cpp"
    try:
        try:
            run_isolated(probe, str(path), extra, path=path, action=action, timeout=PROBE_TIMEOUT_S)
        except NativeCrash:
            if not extra:
                raise
            run_isolated(probe, str(path), False, path=path, action=action, timeout=PROBE_TIMEOUT_S)
            extra = False  # the plain buffers work where the extra ones crashed: remember the machine
            seen[HOSTS_WITHOUT_EXTRA_BUFFERS] = [*crashing_hosts, host]
            log.warning("llama.cpp's extra CPU weight buffers crash on this machine (%s); using plain buffers", host)
    except ValueError as exc:  # llama-cpp-python: "Failed to load model from file"
        raise InputError(path, f"llama.cpp could not load this GGUF file ({exc})") from None
    seen[key] = stamp
    _save(seen)
    return extra


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_file() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("EDGEKIT_CACHE_DIR") or user_cache_dir("edgekit")) / PROBE_CACHE


def _load() -> dict:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(seen: dict) -> None:
    from edgekit.fileio import write_json_atomic

    kept = {k: v for k, v in seen.items() if k == HOSTS_WITHOUT_EXTRA_BUFFERS or Path(k).exists()}  # forget gone files
    with contextlib.suppress(OSError):  # an unwritable cache only means probing again next time
        write_json_atomic(_cache_file(), kept)
