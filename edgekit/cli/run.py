"""``edgekit run`` and ``edgekit chat``: talk to an artifact from the terminal (registered by ``edgekit.cli``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from edgekit.cli import options as opt
from edgekit.errors import InputError
from edgekit.runtime.chat import trim_history
from edgekit.runtime.input_check import ContextOverflow, check_text

# Options shared by run and chat; each maps to one argument of edgekit.load or EdgeModel.generate.
_BACKEND = typer.Option("auto", "--backend", help=opt.VOCABULARY["--backend"])
_TARGET = opt.target_option(detail="Threads, GPU offload and execution provider come from it.")
_MAX_TOKENS = typer.Option(128, "--max-tokens", min=1, help=opt.VOCABULARY["--max-tokens"])
_TEMPERATURE = typer.Option(0.0, "--temperature", min=0.0, help=opt.VOCABULARY["--temperature"])
_TOP_P = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help=opt.VOCABULARY["--top-p"])
_TOP_K = typer.Option(0, "--top-k", min=0, help=opt.VOCABULARY["--top-k"])
_SEED = opt.seed_option(None, "Default: a fresh one each run.")
_THREADS = opt.threads_option("Overrides the target profile.")
_N_CTX = opt.context_option("Overrides the target profile.")
_NO_VERIFY = typer.Option(False, "--no-verify-hash", help=opt.VOCABULARY["--no-verify-hash"])


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def run(
    artifact: Path = typer.Argument(..., help="GGUF file, ONNX folder, HF folder or bundle folder."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    backend: str = _BACKEND,
    target: str | None = _TARGET,
    max_tokens: int = _MAX_TOKENS,
    temperature: float = _TEMPERATURE,
    top_p: float = _TOP_P,
    top_k: int = _TOP_K,
    seed: int | None = _SEED,
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop before this text (repeatable; \\n is a newline)."),
    threads: int | None = _THREADS,
    n_ctx: int | None = _N_CTX,
    as_json: bool = opt.json_option("One object (text, tokens, speed) at the end."),
    no_verify_hash: bool = _NO_VERIFY,
) -> None:
    """Generate a continuation of PROMPT with ARTIFACT, streaming it to the terminal."""
    import edgekit

    out, err = _out(), Console(stderr=True, highlight=False)
    check_text(prompt, "--prompt")  # undecodable bytes on the command line arrive as lone surrogates
    stops = [_unescape(check_text(s, "--stop")) for s in stop] if stop else None
    sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stops)
    with edgekit.load(
        artifact, backend=backend, target=target, n_threads=threads, n_ctx=n_ctx, verify_hash=not no_verify_hash
    ) as model:
        if as_json:
            text = model.generate(prompt, max_tokens=max_tokens, **sampling)
            print(json.dumps({"text": text, **_stats(model)}))
            return
        for piece in model.stream(prompt, max_tokens=max_tokens, **sampling):
            out.print(piece, end="", markup=False)
        out.print()
        s = _stats(model)
        err.print(
            f"[dim]{s['generated_tokens']} tokens, {s['decode_tokens_per_s']:.1f} tokens/s decode, "
            f"first token {s['first_token_ms']:.0f} ms ({model.info.backend}, {model.info.quantization})[/]"
        )


def chat(
    artifact: Path = typer.Argument(..., help="GGUF file, ONNX folder, HF folder or bundle folder."),
    system: str | None = typer.Option(None, "--system", help="System message that starts the conversation."),
    backend: str = _BACKEND,
    target: str | None = _TARGET,
    max_tokens: int = _MAX_TOKENS,
    temperature: float = _TEMPERATURE,
    top_p: float = _TOP_P,
    top_k: int = _TOP_K,
    seed: int | None = _SEED,
    threads: int | None = _THREADS,
    n_ctx: int | None = _N_CTX,
    no_verify_hash: bool = _NO_VERIFY,
) -> None:
    """Chat with ARTIFACT: one user message per line of input, /exit (or end of input) quits.

    The model sees the whole conversation through its chat template. Works with piped input (no TTY).
    """
    import edgekit

    out, err = _out(), Console(stderr=True, highlight=False)
    interactive = sys.stdin.isatty()
    history = [{"role": "system", "content": check_text(system, "--system")}] if system else []
    sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    with edgekit.load(
        artifact, backend=backend, target=target, n_threads=threads, n_ctx=n_ctx, verify_hash=not no_verify_hash
    ) as model:
        if interactive:
            out.print(f"[dim]{model.info.format} {model.info.quantization} on {model.info.backend}; /exit quits[/]")
        # the prompt may fill the context up to what the reply needs (at most half of it)
        budget = model.info.n_ctx - min(max_tokens, model.info.n_ctx // 2)
        for number, line in enumerate(_input_lines(out if interactive else None), start=1):
            if line.strip() == "/exit":
                break
            if not line.strip():
                continue
            try:
                asked, dropped = trim_history(
                    [*history, {"role": "user", "content": line}], lambda m: len(model.prompt_ids(m)), budget
                )
            except ContextOverflow as exc:
                err.print(f"[bold red]error:[/] input line {number}: {exc.problem}; not sent", highlight=False)
                continue
            if dropped:
                err.print(f"[yellow]note:[/] the {dropped} oldest messages were left out to fit the context")
            reply = []
            for piece in model.stream(asked, max_tokens=max_tokens, **sampling):
                out.print(piece, end="", markup=False)
                reply.append(piece)
            out.print()
            history = [*asked, {"role": "assistant", "content": "".join(reply)}]


def _input_lines(prompt_console: Console | None) -> Iterator[str]:
    """Lines of standard input without their newline, decoded as UTF-8 (``InputError`` naming the line if not)."""
    stream = getattr(sys.stdin, "buffer", None)
    number = 0
    while True:
        if prompt_console is not None:
            prompt_console.print("[bold cyan]>[/] ", end="")
        raw = stream.readline() if stream is not None else sys.stdin.readline()
        number += 1
        if not raw:
            return
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError("stdin", f"line {number} is not valid UTF-8 (byte {exc.start})") from None
        yield check_text(raw, f"stdin line {number}").rstrip("\r\n")


def _unescape(text: str) -> str:
    """Let ``--stop "\\n\\n"`` mean two newlines, as users type it in a shell."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _stats(model) -> dict[str, float]:
    s = model.last_stats
    return {
        "prompt_tokens": s.prompt_tokens,
        "generated_tokens": s.generated_tokens,
        "first_token_ms": s.first_token_s * 1000,
        "total_s": s.total_s,
        "decode_tokens_per_s": s.decode_tokens_per_s,
    }


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``chat`` to ``app``."""
    app.command("run", cls=opt.Command)(run)
    app.command("chat", cls=opt.Command)(chat)
