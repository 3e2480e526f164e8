"""The hostile-input catalogue: what a careless or hostile user tries, class by class.

Each case is a command line (``argv``) or a Python snippet (``code``) using only public API that
existed before the hardening, so the same catalogue measures any edgekit tree. ``{F}`` is the
fixtures folder (``fixtures.build``), ``{C}`` the case's own scratch folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.hostile.fixtures import PROFILE_EDITS, TEMPLATES


@dataclass(frozen=True)
class Case:
    klass: str
    name: str
    argv: tuple = ()
    code: str | None = None
    expect: str = "error"  # or "ok"
    words: str = ""  # the error line must contain this (case-insensitive)
    setup: Callable[[Path, Path], None] | None = None
    check: Callable[[Path, str, str], str | None] | None = None  # a problem -> "silent"
    watch: str | None = None  # folder (in the case dir) whose files must not change
    stdin: bytes = b""
    timeout: float = 90.0

    def __str__(self) -> str:
        return f"{self.klass}/{self.name}"


CASES: list[Case] = []


def _add(*cases: Case) -> None:
    CASES.extend(cases)


def _copy(src: str, dst: str = "x") -> Callable[[Path, Path], None]:
    def setup(fixtures: Path, work: Path) -> None:
        source = fixtures / src
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / dst)

    return setup


RUN = ("run", "{C}/x", "-p", "hello", "--max-tokens", "4")

# ---- model files: damage llama.cpp or transformers would not survive ---------------------------------
_GGUF_WORDS = {
    "blocks-1000": "block_count",
    "blocks-0": "block_count",
    "blocks-1": "block",
    "heads-0": "head_count",
    "kv-heads-0": "head_count_kv",
    "heads-not-multiple": "head_count",
    "context-string": "context_length",
    "context-0": "context_length",
    "embedding-mismatch": "",
    "rope-dims-too-big": "rope",
    "eps-nan": "epsilon",
    "short-token-types": "token_type",
    "short-scores": "scores",
    "eos-past-vocab": "eos_token_id",
    "bos-past-vocab": "bos_token_id",
    "one-token-vocab": "tokens",
    "architecture-int": "architecture",
    "missing-tensor": "blk.1.attn_k.weight",
    "missing-embedding": "token_embd",
    "template-bad-byte": "chat_template",
    "truncated": "truncated",
    "header-only": "",
    "empty": "",
    "magic-then-noise": "",
    "tensor-table-flipped": "",
}
for _name, _words in _GGUF_WORDS.items():
    _add(Case("model-file", f"gguf-{_name}", RUN, words=_words, setup=_copy(f"bad-gguf/{_name}.gguf"), watch="x"))
_add(
    Case(
        "model-file",
        "gguf-blocks-1000-sdk-load",
        code="import edgekit; edgekit.load('{F}/bad-gguf/blocks-1000.gguf')",
        words="block_count",
    )
)
for _name in ("renamed", "dropped", "extra", "wrong-shape", "truncated", "header-garbage"):
    _add(Case("model-file", f"safetensors-{_name}", RUN, setup=_copy(f"bad-st/{_name}"), watch="x", timeout=180))


# ---- bundles and manifests ----------------------------------------------------------------------------
def _bundle(edit: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def setup(fixtures: Path, work: Path) -> None:
        shutil.copytree(fixtures / "bundle", work / "b")
        edit(work / "b")

    return setup


def _flip_100k(bundle: Path) -> None:
    path = bundle / "good-F32.gguf"
    raw = bytearray(path.read_bytes())
    start = len(raw) // 2
    raw[start : start + 100_000] = bytes(b ^ 0x55 for b in raw[start : start + 100_000])
    path.write_bytes(bytes(raw))


def _truncate(bundle: Path) -> None:
    path = bundle / "good-F32.gguf"
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 4096])


def _manifest_edit(change: Callable[[dict], object], replace: bool = False) -> Callable[[Path], None]:
    """Edit the manifest in place (``change`` mutates it), or with ``replace`` write what ``change`` returns."""

    def edit(bundle: Path) -> None:
        data = json.loads((bundle / "manifest.json").read_text())
        result = change(data)
        (bundle / "manifest.json").write_text(json.dumps(result if replace else data))

    return edit


def _raw_manifest(raw: bytes) -> Callable[[Path], None]:
    return lambda bundle: (bundle / "manifest.json").write_bytes(raw)


def _manifest_dir(bundle: Path) -> None:
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").mkdir()


_BUNDLE_DAMAGE = {
    "flip-100kB": (_flip_100k, "sha256"),
    "truncated-artifact": (_truncate, "bytes"),
    "files-wrong-type": (_manifest_edit(lambda m: m.update(files="all of them")), "files"),
    "files-missing": (_manifest_edit(lambda m: m.pop("files")), "files"),
    "recommended-missing": (_manifest_edit(lambda m: m.pop("recommended")), "recommended"),
    "recommended-number": (_manifest_edit(lambda m: m["recommended"].update(artifact=3)), "recommended"),
    "artifacts-not-list": (_manifest_edit(lambda m: m.update(artifacts={"a": 1})), "artifacts"),
    "sha256-not-hex": (_manifest_edit(lambda m: m["files"][0].update(sha256="zz")), "sha256"),
    "bytes-string": (_manifest_edit(lambda m: m["files"][0].update(bytes="12")), "bytes"),
    "path-escapes": (_manifest_edit(lambda m: m["recommended"].update(artifact="../../../etc/passwd")), "outside"),
    "top-level-list": (_manifest_edit(lambda m: [m], replace=True), "object"),
    "deep-nesting": (_raw_manifest(b"[" * 200000 + b"]" * 200000), "nested"),
    "not-json": (_raw_manifest(b"{this is not json"), "JSON"),
    "binary": (_raw_manifest(bytes(range(256)) * 16), ""),
    "empty": (_raw_manifest(b""), "JSON"),
    "directory": (_manifest_dir, "not a file"),
    "schema-from-future": (_manifest_edit(lambda m: m.update(schema_version=99)), "schema"),
    "stage-seconds-string": (_manifest_edit(lambda m: m["stages"][0].update(seconds="slow")), "seconds"),
    "kl-string": (_manifest_edit(lambda m: m["artifacts"][0]["verification"].update(mean_kl="low")), "mean_kl"),
}
for _name, (_edit, _words) in _BUNDLE_DAMAGE.items():
    _add(Case("bundle", f"inspect-{_name}", ("inspect", "{C}/b"), words=_words, setup=_bundle(_edit), watch="b"))
for _name in ("flip-100kB", "truncated-artifact", "files-missing", "deep-nesting", "directory"):
    _edit, _words = _BUNDLE_DAMAGE[_name]
    _add(
        Case(
            "bundle",
            f"run-{_name}",
            ("run", "{C}/b", "-p", "hi", "--max-tokens", "2"),
            words=_words,
            setup=_bundle(_edit),
            watch="b",
        ),
        Case(
            "bundle",
            f"load-{_name}",
            code="import edgekit; m = edgekit.load('{C}/b'); print(m.generate('hi', max_tokens=2))",
            words=_words,
            setup=_bundle(_edit),
            watch="b",
        ),
    )
_add(
    Case(
        "bundle",
        "inspect-markup-in-reason",
        ("inspect", "{C}/b"),
        expect="ok",
        setup=_bundle(_manifest_edit(lambda m: m["recommended"].update(reason="[/bold] [link=x]"))),
    )
)


# ---- chat templates carried by the model file ---------------------------------------------------------
def _not_pwned(work: Path, out: str, err: str) -> str | None:
    return "the template ran a shell command" if Path("/tmp/edgekit-hostile-pwned").exists() else None


for _name in TEMPLATES:
    _add(
        Case(
            "template",
            _name,
            ("chat", "{C}/x", "--max-tokens", "2"),
            stdin=b"hello\n",
            setup=_copy(f"tpl/{_name}.gguf"),
            check=_not_pwned,
            words="chat_template",
            timeout=60,
        )
    )

# ---- profiles and build configs -----------------------------------------------------------------------
for _name in [*PROFILE_EDITS, "utf16", "binary", "bomb", "inline-bomb", "huge"]:
    _add(Case("config", f"profile-{_name}", ("targets", "validate", "{F}/cfg/profile-" + _name + ".toml")))
_add(
    Case(
        "config",
        "profile-inf-bandwidth-load",
        code="from edgekit.targets import load_target; load_target('{F}/cfg/profile-inf-bandwidth.toml')",
        words="memory_bandwidth_gbs",
    )
)
_BUILD_CONFIGS = (
    "lr-inf",
    "lr-nan",
    "steps-true",
    "trust-remote-code-yes",
    "unknown-suite",
    "empty-gguf-levels",
    "enabled-string",
    "batch-float",
    "utf16",
    "binary",
    "bomb",
)
for _name in _BUILD_CONFIGS:
    _add(
        Case(
            "config",
            f"build-{_name}",
            code="from edgekit.pipeline.config import load_build_config; load_build_config('{F}/cfg/build-"
            + _name
            + ".toml')",
        )
    )
_SETS = {
    "unknown-section": ("zzz.x=1", "--set"),
    "no-equals": ("distill.steps", "--set"),
    "steps-bool": ("distill.steps=true", "--set"),
    "lr-inf": ("distill.lr=inf", "--set"),
    "nested-bomb": ("distill.steps=" + "[" * 50000, "--set"),
    "value-not-section": ("seed.x=1", "--set"),
}
for _name, (_item, _words) in _SETS.items():
    _add(
        Case(
            "config",
            f"set-{_name}",
            code=f"from edgekit.pipeline.config import load_build_config; load_build_config(None, [{_item!r}])",
            words=_words,
        )
    )

# ---- interruption, resume and temporaries -------------------------------------------------------------
_RESUME = (
    "import torch\n"
    "from pathlib import Path\n"
    "from edgekit.models import load_model\n"
    "from edgekit.distill.checkpoint import load_checkpoint\n"
    "m = load_model('{F}/hf'); opt = torch.optim.AdamW(m.parameters(), lr=1e-3)\n"
    "print(load_checkpoint(Path('{C}/ck'), m, opt)[0])\n"
)
for _name in ("truncated", "step-1e9", "step-string", "state-garbage", "no-model", "other-model"):
    _add(Case("interrupt", f"resume-{_name}", code=_RESUME, setup=_copy(f"ckpt/{_name}", "ck"), timeout=180))


def _no_temporaries(work: Path, out: str, err: str) -> str | None:
    left = [
        p.name
        for folder in (work, work / "out")
        if folder.is_dir()
        for p in folder.iterdir()
        if p.name.startswith((".", "tmp")) and p.name not in (".cache",)
    ]
    return f"temporaries left behind: {left}" if left else None


def _kill_export_then_rerun(level: str) -> Callable[[Path, Path], None]:
    """Start an export, SIGKILL it once its scratch files appear, leave the debris for the case."""

    def setup(fixtures: Path, work: Path) -> None:
        import os
        import signal
        import subprocess
        import sys
        import time

        env = {**os.environ, "EDGEKIT_CACHE_DIR": str(work / ".cache"), "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "edgekit", "export", str(fixtures / "hf"), "-q", level, "-o", str(work / "out")]
        proc = subprocess.Popen(
            [*argv, "--no-verify", "--imatrix", "none"],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            debris = [p for p in (*work.iterdir(), *(work / "out").glob("*")) if p.name.startswith((".", "tmp"))]
            if [p for p in debris if p.name != ".cache"]:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    return setup


_add(
    Case(
        "interrupt",
        "kill-during-quantize-then-rerun",
        ("export", "{F}/hf", "-q", "Q8_0", "-o", "{C}/out", "--no-verify", "--imatrix", "none"),
        expect="ok",
        setup=_kill_export_then_rerun("Q8_0"),
        check=_no_temporaries,
        timeout=300,
    ),
    Case(
        "interrupt",
        "kill-during-f16-then-rerun",
        ("export", "{F}/hf", "-q", "F16", "-o", "{C}/out", "--no-verify", "--imatrix", "none"),
        expect="ok",
        setup=_kill_export_then_rerun("F16"),
        check=_no_temporaries,
        timeout=300,
    ),
)

# ---- generation arguments -----------------------------------------------------------------------------
_GGUF = "{F}/gguf/good-F32.gguf"
_SDK = "import edgekit\nm = edgekit.load('" + _GGUF + "', n_ctx=128)\n"
_GEN = {
    "detokenize-vocab-size": ("print(m.detokenize([m.info.vocab_size]))", "vocabulary"),
    "detokenize-negative": ("print(m.detokenize([-1]))", "vocabulary"),
    "detokenize-huge": ("print(m.detokenize([2**40]))", "vocabulary"),
    "temperature-nan": ("print(m.generate('hi', max_tokens=4, temperature=float('nan')))", "temperature"),
    "temperature-negative": ("print(m.generate('hi', max_tokens=4, temperature=-1.0))", "temperature"),
    "temperature-inf": ("print(m.generate('hi', max_tokens=4, temperature=float('inf')))", "temperature"),
    "top-p-2": ("print(m.generate('hi', max_tokens=4, temperature=1.0, top_p=2.0))", "top_p"),
    "top-k-negative": ("print(m.generate('hi', max_tokens=4, temperature=1.0, top_k=-5))", "top_k"),
    "seed-negative": ("print(m.generate('hi', max_tokens=4, temperature=1.0, seed=-1))", "seed"),
    "seed-huge": ("print(m.generate('hi', max_tokens=4, temperature=1.0, seed=2**70))", "seed"),
    "max-tokens-negative": ("print(m.generate('hi', max_tokens=-3))", "max_tokens"),
    "prompt-not-text": ("print(m.generate(12345, max_tokens=2))", "prompt"),
    "prompt-surrogate": ("print(m.generate('hi \\udcff', max_tokens=2))", "UTF-8"),
    "prompt-over-context": ("print(m.generate('word ' * 400, max_tokens=2))", "context"),
    "logprobs-over-context": ("print(m.logprobs('word ' * 400))", "context"),
}
for _name, (_line, _words) in _GEN.items():
    _add(Case("generation", _name, code=_SDK + _line, words=_words))
_TORCH_SDK = "import edgekit\nm = edgekit.load('{F}/hf', n_ctx=128)\n"
for _name in ("seed-negative", "temperature-nan", "detokenize-vocab-size", "prompt-over-context"):
    _line, _words = _GEN[_name]
    _add(Case("generation", f"torch-{_name}", code=_TORCH_SDK + _line, words=_words, timeout=180))
_add(
    Case(
        "generation", "cli-prompt-over-context", ("run", _GGUF, "--n-ctx", "32", "-p", "word " * 200), words="context"
    ),
    Case("generation", "cli-prompt-invalid-utf8", ("run", _GGUF, "-p", b"caf\xe9 \xff"), words="UTF-8"),
    Case("generation", "cli-stop-invalid-utf8", ("run", _GGUF, "-p", "hi", "--stop", b"\xff"), words="UTF-8"),
    Case("generation", "cli-chat-stdin-invalid-utf8", ("chat", _GGUF), stdin=b"hello \xff\xfe\n", words="UTF-8"),
    Case(
        "generation",
        "cli-chat-outgrows-context",
        ("chat", _GGUF, "--n-ctx", "64", "--max-tokens", "8"),
        stdin=b"".join(b"tell me about the number %d please\n" % i for i in range(12)),
        expect="ok",
        check=lambda work, out, err: None if "left out" in err else "no notice that history was trimmed",
    ),
    Case(
        "generation",
        "cli-chat-one-line-over-context",
        ("chat", _GGUF, "--n-ctx", "64", "--max-tokens", "8"),
        stdin=b"word " * 200 + b"\nhello\n",
        expect="ok",
        check=lambda work, out, err: None if "not sent" in err else "the long line was not reported",
    ),
)


# ---- arguments handed to other programs ---------------------------------------------------------------
def _no_proxy_file(work: Path, out: str, err: str) -> str | None:
    return "ssh ran the ProxyCommand" if (work / "proxy-ran").exists() else None


for _name, _host in {
    "proxycommand": "-oProxyCommand=touch {C}/proxy-ran",
    "option-after-host": "host -oProxyCommand=touch {C}/proxy-ran",
    "newline": "host\n-oProxyCommand=touch {C}/proxy-ran",
    "empty": "",
}.items():
    _add(
        Case(
            "remote",
            f"ssh-{_name}",
            ("bench", _GGUF, "--ssh", _host, "--out", "{C}/bench"),
            words="--ssh",
            check=_no_proxy_file,
        )
    )
_add(
    Case(
        "remote",
        "ssh-key-option",
        ("bench", _GGUF, "--ssh", "user@host", "--ssh-key", "-oProxyCommand=touch {C}/proxy-ran", "--out", "{C}/b"),
        words="--ssh-key",
        check=_no_proxy_file,
    ),
    Case(
        "remote",
        "ssh-remote-python-option",
        ("bench", _GGUF, "--ssh", "user@host", "--remote-python", "-c", "--out", "{C}/b"),
        words="--remote-python",
    ),
)
