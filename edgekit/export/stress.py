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


# Strings that tell pre-tokenizers apart: digit grouping, contractions in both cases, letter case
# runs, marks, CJK and kana, punctuation next to letters and newlines, whitespace shapes. All are
# in NFC, the form nearly all text is in: a tokenizer's NFC normalizer (Qwen2), which llama.cpp
# does not apply, changes none of them.
PRETOKENIZER_TEXTS: tuple[str, ...] = (
    "1 12 123 1234 12345 123456 1,234,567.89 ½ ² ٣ ६",
    "I'm you're he'll we'd they've it's I'M YOU'RE HE'LL WE'D THEY'VE IT'S",
    "camelCaseWords HTTPServer iPhone XMLHttpRequest ABCdef abcDEF",
    "q\u0307 x\u0323\u0304 नमस्ते Ångström naïve ñ ç ŉ ǅ ﬁ",  # marks that stay marks in NFC
    "東京タワーはとても高いです。ひらがな カタカナ 中文，标点！한국어",
    "foo.bar(baz)[0] = {'k': \"v\"}; // comment\n/* x */ <tag attr=1/>",
    "a\n\nb\r\n\r\nc\n \n d  \t e\t\t\n",
    "  leading and trailing  ",
    "$100 +5 <=> ^hat ~tilde |pipe `tick` @at #hash %pct &amp *star",
    "...!!!??? --- ___ ''' \"\"\" ,,, ;;; ::",
    "x/y/z a/b\n/c https://a.b/c/d.html",
    "Привет, мир! Γειά σου κόσμε! مرحبا بالعالم שלום",
)
