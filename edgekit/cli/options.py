"""One vocabulary of flags for every command: each name means one thing, each short flag one name.

A flag used by more than one command is built here from ``VOCABULARY`` (its meaning, which starts
its help), so ``--target`` or ``--out`` read the same in ``build``, ``export`` and ``bench``;
``tests/test_cli_vocabulary.py`` walks the registered commands and fails on a name or short flag
with two meanings. Spellings that changed keep working for one release through ``DEPRECATED``:
the command rewrites them before parsing and prints a one-line note.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from edgekit.loading import DTYPES, LoadOptions

# Flag -> what it means (the first words of its help in every command that has it).
VOCABULARY: dict[str, str] = {
    "--model": "The model to work on: HF folder, Hub id, or 'demo' (the built-in teacher).",
    "--teacher": "The teacher model (HF folder, Hub id, or 'demo'), for KL/top-1 against it.",
    "--reference": "The fp HF model folder the artifacts came from (or 'demo'): the quality reference.",
    "--target": "Target profile name (see `edgekit targets`) or .toml path.",
    "--out": "Output folder.",
    "--quant": "Quantization level(s).",
    "--device": "Where PyTorch work runs: auto, cpu or cuda.",
    "--dtype": "Dtype the model's weights are loaded in: " + ", ".join(DTYPES) + ".",
    "--revision": "Hub branch, tag or commit of the model (ignored for local folders).",
    "--cache-dir": "Folder for Hub downloads (default: the Hugging Face cache).",
    "--trust-remote-code": "Run the model repository's own Python code (off by default: it is arbitrary code).",
    "--context": "Context length in tokens.",
    "--quiet": "No progress bars.",
    "--threads": "CPU threads.",
    "--seed": "Seed of every random choice, for repeatable results.",
    "--json": "Machine-readable JSON output.",
    "--calibration": "Calibration text (.txt/.jsonl); default: the built-in corpus.",
    "--resume": "Continue an interrupted run from its checkpoints.",
    "--topk": "K of the top-K teacher log-prob cache.",
    "--seq-kd": "Sequence-level KD: the teacher writes the training text.",
    "--temperature": "Sampling temperature: 0 is greedy; higher samples more freely.",
    "--max-tokens": "Most tokens to generate per reply.",
    "--top-p": "Nucleus sampling mass (1 disables).",
    "--top-k": "Sample among the K likeliest tokens (0 disables).",
    "--backend": "Runtime: auto, llama.cpp, onnxruntime or torch.",
    "--no-verify-hash": "Skip checking a bundle's files against the sha256 in its manifest.",
    "--ignore-resources": "Run even when preflight estimates that this machine's memory or disk cannot hold a stage.",
}

# Command -> {old spelling: the tokens that replace it}. Kept for one release (until edgekit 0.2).
DEPRECATED: dict[str, dict[str, tuple[str, ...]]] = {
    "build": {"--teacher": ("--model",), "--no-progress": ("--quiet",), "--progress": ()},
    "bench": {"--model": ("--reference",), "-m": ("--reference",), "--gpu": ("--device", "cuda")},
    "plan": {"--gpu": ("--gpu-class",)},
    "export": {"-q": ("--quant",)},
    "verify": {"--level": ("--quant",), "--tokens": ("--heldout-tokens",)},
    "prune": {"--level": ("--quant",)},
    "distill": {
        "--layers": ("--student-layers",),
        "-l": ("--student-layers",),
        "-s": ("--student",),
        "--temperature": ("--kd-temperature",),
    },
    "run": {"--n-ctx": ("--context",)},
    "chat": {"--n-ctx": ("--context",)},
}
REMOVED_IN = "0.2"


def rewrite_deprecated(command: str, args: list[str], note: Any = None) -> list[str]:
    """Replace ``command``'s old spellings in ``args`` (before any ``--``), one note per use."""
    table = DEPRECATED.get(command, {})
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        old, sep, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        new = table.get(old)
        if new is None:
            out.append(arg)
            continue
        shown = " ".join(new) or "nothing (it is the default)"
        (note or _note)(f"note: 'edgekit {command} {old}' is deprecated, use {shown} (removed in {REMOVED_IN})")
        out += [*new[:-1], f"{new[-1]}={value}"] if sep and new else list(new)
    return out


def _note(text: str) -> None:
    print(text, file=sys.stderr)


class Command(TyperCommand):
    """A command that accepts its deprecated spellings (see ``DEPRECATED``) with a note."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_deprecated(self.name or "", list(args)))


def _help(flag: str, detail: str = "") -> str:
    return f"{VOCABULARY[flag]} {detail}".strip()


def model_argument(detail: str = "") -> Any:
    return typer.Argument(..., metavar="MODEL", help=_help("--model", detail))


def model_option(default: str | None = "demo", detail: str = "") -> Any:
    return typer.Option(default, "--model", "-m", help=_help("--model", detail))


def teacher_option(detail: str = "") -> Any:
    return typer.Option(None, "--teacher", help=_help("--teacher", detail))


def reference_option(required: bool = False, detail: str = "") -> Any:
    return typer.Option(... if required else None, "--reference", "-r", help=_help("--reference", detail))


def target_option(required: bool = False, detail: str = "") -> Any:
    return typer.Option(... if required else None, "--target", "-t", help=_help("--target", detail))


def out_option(default: Path | None, detail: str = "") -> Any:
    return typer.Option(default, "--out", "-o", help=_help("--out", detail))


def quant_option(default: str | None = None, detail: str = "") -> Any:
    return typer.Option(default, "--quant", help=_help("--quant", detail))


def device_option(default: str = "auto", detail: str = "") -> Any:
    return typer.Option(default, "--device", help=_help("--device", detail))


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help=_help("--quiet"))


def context_option(detail: str = "") -> Any:
    return typer.Option(None, "--context", min=1, help=_help("--context", detail))


def threads_option(detail: str = "") -> Any:
    return typer.Option(None, "--threads", min=1, help=_help("--threads", detail))


def seed_option(default: int | None = 0, detail: str = "") -> Any:
    return typer.Option(default, "--seed", help=_help("--seed", detail))


def json_option(detail: str = "") -> Any:
    return typer.Option(False, "--json", help=_help("--json", detail))


def calibration_option(detail: str = "") -> Any:
    return typer.Option(None, "--calibration", help=_help("--calibration", detail))


def resume_option(detail: str = "") -> Any:
    return typer.Option(False, "--resume", help=_help("--resume", detail))


def topk_option(detail: str = "") -> Any:
    return typer.Option(64, "--topk", help=_help("--topk", detail))


def seq_kd_option(detail: str = "") -> Any:
    return typer.Option(False, "--seq-kd", help=_help("--seq-kd", detail))


def ignore_resources_option() -> Any:
    return typer.Option(False, "--ignore-resources", help=_help("--ignore-resources"))


# The Hugging Face loading options, on every command that loads a model the user names.
def revision_option() -> Any:
    return typer.Option(None, "--revision", help=_help("--revision"))


def cache_dir_option() -> Any:
    return typer.Option(None, "--cache-dir", help=_help("--cache-dir"))


def trust_remote_code_option() -> Any:
    return typer.Option(False, "--trust-remote-code", help=_help("--trust-remote-code"))


def dtype_option() -> Any:
    return typer.Option("float32", "--dtype", help=_help("--dtype"))


def load_options(
    revision: str | None, cache_dir: Path | None, trust_remote_code: bool, dtype: str = "float32"
) -> LoadOptions:
    """The HF loading flags as one value (checked: an unknown --dtype is a one-line error)."""
    return LoadOptions(revision=revision, cache_dir=cache_dir, trust_remote_code=trust_remote_code, dtype=dtype)
