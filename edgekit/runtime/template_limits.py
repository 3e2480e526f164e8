"""Render a model's chat template with limits on time and size.

A chat template comes with the model file, so it is untrusted code. Jinja's sandbox already stops it
from reaching Python internals, but not from spending: ``{{ 'x' * 2**31 }}`` allocates 2 GiB, nested
``range(100000)`` loops run for hours and ``{{ 9 ** 9 ** 9 }}`` computes a number with millions of
digits. Here every operator that can grow a value (``*``, ``**``, ``+``), every call and every filter
checks the sizes involved, rendering stops after ``MAX_RENDER_SECONDS`` (a trace function checks the
clock on each line of the compiled template), and the output is cut off at ``MAX_OUTPUT_CHARS``.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDER_SECONDS = 5.0  # a real chat template renders in well under 10 ms
MAX_OUTPUT_CHARS = 4 << 20  # characters; far beyond any model's context, far below a memory problem
MAX_EXPONENT_BITS = 4096  # bits of a ``**`` result: enough for any arithmetic a template does


class TemplateLimit(Exception):
    """A chat template went past one of the limits; the message says which."""


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


_BIG_NUMBER = re.compile(r"\d{" + str(len(str(MAX_OUTPUT_CHARS))) + ",}")


def _check_format(text: Any) -> None:
    """A format string (``'{:>999999999}'``, ``'%999999999d'``) must not ask for a gigantic width."""
    if isinstance(text, str) and any(int(m) > MAX_OUTPUT_CHARS for m in _BIG_NUMBER.findall(text)):
        raise TemplateLimit(f"a format string asks for a width above the limit of {MAX_OUTPUT_CHARS:,}")


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT_CHARS:
        raise TemplateLimit(f"an argument of {value} is larger than the limit of {MAX_OUTPUT_CHARS}")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with sizes checked before values grow."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            _check_format(left)
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(times, int) and _size(seq) * times > MAX_OUTPUT_CHARS:
                    raise TemplateLimit(f"a value of {_size(seq) * times:,} items is larger than {MAX_OUTPUT_CHARS:,}")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * max(abs(left).bit_length(), 1) > MAX_EXPONENT_BITS:
                raise TemplateLimit(f"{left} ** {right} is larger than {MAX_EXPONENT_BITS} bits")
        elif operator == "+" and (_size(left) or 0) + (_size(right) or 0) > MAX_OUTPUT_CHARS:
            raise TemplateLimit(f"a value of more than {MAX_OUTPUT_CHARS:,} items")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_int(value)  # 'x'.ljust(10**9), ...
        if getattr(__obj, "__name__", "") in ("format", "format_map"):
            bound = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format, keeping the original
            _check_format(getattr(bound, "__self__", None))  # '{:>999999999}'.format(1)
        return super().call(__context, __obj, *args, **kwargs)


def _check_locals(values: dict[str, Any]) -> None:
    """Each template variable (and each attribute of a ``namespace()``) within ``MAX_OUTPUT_CHARS``."""
    for value in values.values():
        inner = getattr(value, "_Namespace__attrs", None)  # jinja2.utils.Namespace keeps its values here
        for item in inner.values() if isinstance(inner, dict) else (value,):
            if (_size(item) or 0) > MAX_OUTPUT_CHARS:
                raise TemplateLimit(f"a template variable grew past {MAX_OUTPUT_CHARS:,} items")


def _limited_filter(fn: Callable) -> Callable:
    @functools.wraps(fn)  # keeps jinja's pass_context / pass_environment marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            _check_int(value)  # center(10**9), indent(10**9), truncate(...)
        for value in args[:2]:
            _check_format(value)  # '%999999999d'|format(1): the format string may follow the context
        result = fn(*args, **kwargs)
        if _size(result) is not None and _size(result) > MAX_OUTPUT_CHARS:
            raise TemplateLimit(f"a filter produced {_size(result):,} items, more than {MAX_OUTPUT_CHARS:,}")
        return result

    return wrapper


def make_environment() -> LimitedSandbox:
    """The environment chat templates compile in: HF's globals (raise_exception, tojson), limited filters."""
    from jinja2.ext import loopcontrols

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.filters = {name: _limited_filter(fn) for name, fn in env.filters.items()}
    env.globals["raise_exception"] = raise_exception
    return env


def render_limited(template: Any, **context: Any) -> str:
    """``template.render(**context)`` within ``MAX_RENDER_SECONDS`` and ``MAX_OUTPUT_CHARS``; else ``TemplateLimit``."""
    deadline = time.monotonic() + MAX_RENDER_SECONDS

    def tracer(frame: Any, event: str, arg: Any) -> Callable:
        if time.monotonic() > deadline:
            raise TemplateLimit(f"rendering took longer than {MAX_RENDER_SECONDS:.0f} s")
        if event == "line" and frame.f_code.co_filename == "<template>":
            _check_locals(frame.f_locals)  # `~` and namespace assignment grow values without an operator hook
        return tracer

    pieces, total = [], 0
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        for piece in template.generate(**context):
            total += len(piece)
            if total > MAX_OUTPUT_CHARS:
                raise TemplateLimit(f"the rendered prompt is longer than {MAX_OUTPUT_CHARS:,} characters")
            pieces.append(piece)
    except MemoryError:
        raise TemplateLimit("rendering ran out of memory") from None
    finally:
        sys.settrace(previous)
    return "".join(pieces)
