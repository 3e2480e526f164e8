"""Texts that break tokenizer ports: the artifact must give the same ids as the HF tokenizer on each."""

STRESS_TEXTS: tuple[str, ...] = (
    "",
    " ",
    "Hello, world!",
    "naïve café résumé — “quotes” and ‘apostrophes’",
    "日本語のテキストと中文文本，한국어 텍스트",
    "emoji: 🙂🚀👩‍👩‍👧‍👦 and flags 🇫🇷",
    "def f(x):\n\treturn x ** 2  # square\n",
    "    four leading spaces, then   three\n\n\n\nnewlines",
    "tabs\t\tand\r\nwindows line ends",
    "numbers 1234567890 3.14159 -42 1e-9",
    "URLs https://example.org/a?b=c&d=e#f and e-mail a.b@c.de",
    "<|bos|> literal special-looking text <s> </s> <unk>",
    "a" * 300,
    "Ω≈ç√∫˜µ≤≥÷ ¡™£¢∞§¶•ªº–≠",
    "mixed\u00a0no-break\u2009thin\u200bzero-width spaces",
)


def stress_texts(tokenizer) -> tuple[str, ...]:
    """The stress set plus a text holding this tokenizer's own special tokens between words.

    A GGUF or ONNX port must split those out as single ids exactly as the HF tokenizer does.
    """
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    if not specials:
        return STRESS_TEXTS
    return (*STRESS_TEXTS, "start " + " middle ".join(specials) + " end")
