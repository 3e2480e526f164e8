"""Turn chat messages into a prompt with the model's own chat template.

The template is the Jinja text Hugging Face stores in the tokenizer config (``chat_template`` in
``tokenizer_config.json`` or ``chat_template.jinja``); GGUF files carry the same text under
``tokenizer.chat_template``. Every backend renders with this one function, so a chat prompt is the
same string (and the same ids) on PyTorch, ONNX Runtime and llama.cpp. Without a template, a plain
``role: content`` transcript is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.runtime.meta import gguf_metadata, read_json
from edgekit.runtime.template_limits import TemplateLimit, make_environment, render_limited

Message = dict[str, str]


@dataclass(frozen=True)
class ChatFormat:
    """What rendering needs: the Jinja template (None: plain transcript) and the BOS/EOS token texts."""

    template: str | None = None
    bos_token: str = ""
    eos_token: str = ""


def check_messages(messages: Sequence[Any]) -> list[Message]:
    """Messages as ``[{"role": str, "content": str}, ...]``; ``InputError`` naming the bad one otherwise."""
    checked = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise InputError(f"messages[{i}]", 'expected {"role": str, "content": str}')
        checked.append(dict(msg))
    if not checked:
        raise InputError("messages", "empty chat: give at least one message")
    return checked


def render_chat(messages: Sequence[Message], fmt: ChatFormat, add_generation_prompt: bool = True) -> str:
    """The prompt text for ``messages``: the template rendered as transformers does, or the plain transcript."""
    messages = check_messages(messages)
    if not fmt.template:
        return plain_transcript(messages, add_generation_prompt)
    try:
        return render_limited(
            _compile(fmt.template),
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=fmt.bos_token,
            eos_token=fmt.eos_token,
        )
    except TemplateLimit as exc:
        raise InputError("chat_template", f"the model's chat template was stopped: {exc}") from None
    except Exception as exc:  # jinja errors, templates' raise_exception, runaway recursion
        raise InputError("chat_template", f"cannot render the model's chat template: {exc}") from None


def trim_history(
    messages: Sequence[Message], count_tokens: Callable[[Sequence[Message]], int], budget: int
) -> tuple[list[Message], int]:
    """Drop the oldest turns until ``count_tokens(messages) <= budget``; returns (kept, how many dropped).

    A leading system message and the newest message are always kept; a chat longer than the context
    then goes on with its recent past, as chat applications do, instead of failing and losing it all.
    ``ContextOverflow`` when even those two do not fit.
    """
    from edgekit.runtime.input_check import ContextOverflow

    kept = list(messages)
    head = 1 if kept and kept[0]["role"] == "system" else 0
    dropped = 0
    while count_tokens(kept) > budget:
        if len(kept) - head <= 1:
            raise ContextOverflow(
                "message", f"too long for the model's context ({count_tokens(kept)} > {budget} tokens)"
            )
        del kept[head]
        dropped += 1
    return kept, dropped


def plain_transcript(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """Fallback for models without a template: one ``role: content`` line per message."""
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant:" if add_generation_prompt else "")


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    """A sandboxed, size-limited Jinja template with the globals HF templates use (raise_exception, tojson)."""
    return make_environment().from_string(template)


def chat_format_of(backend: Any) -> ChatFormat:
    """The chat template of a loaded backend: its own attributes first, then the files it came from.

    BOS/EOS texts a backend does not publish are read from its files too, since templates use them.
    """
    path = Path(backend.info.path)
    from_files = gguf_chat_format(path) if path.is_file() and path.suffix != ".onnx" else None
    if from_files is None:
        from_files = folder_chat_format(path if path.is_dir() else path.parent)
    template = getattr(backend, "chat_template", None) or backend.info.extra.get("chat_template")
    return ChatFormat(
        template or from_files.template,
        _text(getattr(backend, "bos_token", None)) or from_files.bos_token,
        _text(getattr(backend, "eos_token", None)) or from_files.eos_token,
    )


def folder_chat_format(folder: Path) -> ChatFormat:
    """Template and special tokens from a HF/ONNX folder's tokenizer files (absent: plain transcript)."""
    config = read_json(folder / "tokenizer_config.json")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja_file = folder / "chat_template.jinja"
    if not template and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    if not template:
        template = read_json(folder / "chat_template.json").get("chat_template")
    return ChatFormat(template or None, _text(config.get("bos_token")), _text(config.get("eos_token")))


def gguf_chat_format(path: Path) -> ChatFormat:
    """Template and BOS/EOS texts from GGUF metadata; plain transcript if the file has none."""
    meta = gguf_metadata(path)
    return ChatFormat(meta.get("chat_template"), meta.get("bos_token", ""), meta.get("eos_token", ""))


def _text(token: Any) -> str:
    """A special token as text: HF configs store either a string or ``{"content": ...}``."""
    if isinstance(token, dict):
        return str(token.get("content", ""))
    return str(token) if token else ""
