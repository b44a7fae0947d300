"""A deterministic corpus of strings for tokenizer tests: >= 10,000 strings mixing many scripts,
emoji (ZWJ sequences, flags, skin tones), code, whitespace runs (spaces, tabs, newlines, \\r\\n,
NBSP, ideographic space), numbers of every length, English contractions in several cases, the
text of special tokens of common families, combining marks, text that differs under NFC / NFKC,
and the empty string.

corpus() returns the same list on every call and every machine (random.Random with a fixed seed;
no dependence on hash order or locale).
"""
from __future__ import annotations

import random

SCRIPTS = {
    "latin": "The quick brown fox jumps over the lazy dog. Crème brûlée, naïve façade, "
             "Ångström, Œuvre, Straße, Łódź, Dvořák, São Paulo, İstanbul, ıi",
    "cyrillic": "Съешь же ещё этих мягких французских булок, да выпей чаю. Їжак ґудзик",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Σίσυφος ΣΊΣΥΦΟΣ ς",
    "arabic": "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق",
    "hebrew": "דג סקרן שט בים מאוכזב ולפתע מצא חברה",
    "devanagari": "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले",
    "thai": "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
    "cjk": "天地玄黄宇宙洪荒日月盈昃辰宿列张。いろはにほへと ちりぬるを カタカナ",
    "hangul": "다람쥐 헌 쳇바퀴에 타고파 키스의 고유조건은 입술끼리 만나야 하고",
    "emoji": "👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇯🇵🇩🇪 ❤️ 🤷‍♀️ 🧑🏿‍💻 ✨🎉 😀😃😄",
    "symbols": "© ® ™ € £ ¥ ₹ ∑ ∫ √ ∞ ≤ ≥ ≠ → ← ↔ ★ ☆ ♠ ♣ ♥ ♦ § ¶ † ‡ • … ‰",
}

CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "if __name__ == '__main__':\n    main()",
    "const x = {a: 1, 'b': [2, 3]};  // comment",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "<div class=\"x\">Hello &amp; bye</div>",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 1); }",
    "    indented    code\twith\ttabs  \n\n\n",
    "x+=1;y-=2;z*=3;w/=4;v%=5;u**=6;t//=7",
    "https://example.com/a/b?c=d&e=f#g",
    "λx. x + 1 -- lambda ⇒ arrow",
]

WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", " \n ",
              "\u00a0", "\u00a0\u00a0", "\u3000", "\u2028", "\u2009", "\u200b", " \t\n", "\v",
              "\f", "\u0085", "        "]

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL",
                "'D", "’s", "n't", "N'T"]

SPECIALS = ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
            "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|reserved_special_token_5|>", "<pad>", "<mask>", "[CLS]",
            "<|fim_prefix|>", "<think>", "</think>", "<tool_call>", "<|vision_start|>",
            "<0x41>", "▁", "Ġ", "<|", "|>", "<s", "s>"]

# text whose NFC, NFD, NFKC forms differ
NORMALIZATION = ["e\u0301", "é", "ﬁ", "ﬃ", "①②③", "Ａｂｃ１２３", "ｶﾀｶﾅ", "x²", "H₂O", "Ω",
                 "Å", "Å", "ñ", "n\u0303", "\u1e9b\u0323", "㍻", "½", "…", "™", "ǆ", "ﷺ",
                 "a\u0308\u0301", "\u0915\u093c", "한", "\u1112\u1161\u11ab", "K", "ſ",
                 "e\u0301\u0301\u0301", "\u0301start",
                 # characters newer than HF's normalization tables (it leaves them alone)
                 "\U0001fbf5", "\u32ff", "\U0001e030x", "\ua7f2", "a\u1ac0\u0334"]

WORDS = ["hello", "world", "the", "of", "and", "tokenizer", "quantization", "model", "GGUF",
         "llama", "Qwen", "HELLO", "Hello", "hELLO", "don", "it", "we", "they", "I", "a",
         "supercalifragilisticexpialidocious", "x", "_", "__init__", "foo_bar", "camelCase",
         "snake_case", "kebab-case", "e-mail", "co-op", "U.S.A.", "i.e.", "etc."]


def _numbers(rng: random.Random) -> str:
    k = rng.randint(1, 24)
    s = "".join(rng.choice("0123456789") for _ in range(k))
    return rng.choice([s, "-" + s, s + "." + s[: rng.randint(1, 4)], "1," + s, "٣٤٥" + s,
                       "१२३", "１２３", s + "th"])


def _fragment(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        text = rng.choice(list(SCRIPTS.values()))
        a = rng.randrange(len(text))
        return text[a: a + rng.randint(1, 40)]
    if kind == 1:
        return rng.choice(CODE)
    if kind == 2:
        return rng.choice(WHITESPACE) * rng.randint(1, 3)
    if kind == 3:
        return rng.choice(WORDS) + rng.choice(CONTRACTIONS)
    if kind == 4:
        return rng.choice(SPECIALS)
    if kind == 5:
        return rng.choice(NORMALIZATION)
    if kind == 6:
        return _numbers(rng)
    if kind == 7:
        return rng.choice(WORDS)
    if kind == 8:
        return rng.choice("!?.,;:-()[]{}\"'`~@#$%^&*+=<>/\\|")  * rng.randint(1, 4)
    return SCRIPTS["emoji"][rng.randrange(len(SCRIPTS["emoji"])):][: rng.randint(1, 6)]


def _join(rng: random.Random, parts: list[str]) -> str:
    out = []
    for p in parts:
        out.append(p)
        out.append(rng.choice(["", " ", " ", " ", "  ", "\n", "\t", "\u00a0"]))
    return "".join(out)


_CACHE: list[str] | None = None


def corpus(n: int = 10_000) -> list[str]:
    """Fixed strings (every listed sample on its own) then random mixtures, n in all."""
    global _CACHE
    if _CACHE is not None and len(_CACHE) >= n:
        return _CACHE[:n]
    rng = random.Random(20240531)
    out: list[str] = ["", " ", "a", "\n", "  \n\n  "]
    out += list(SCRIPTS.values()) + CODE + WHITESPACE + SPECIALS + NORMALIZATION + WORDS
    out += [w + c for w in ("it", "IT", "we", "he") for c in CONTRACTIONS]
    out += ["".join(str(d % 10) for d in range(k)) for k in range(1, 30)]
    out += [s + " " + s for s in SPECIALS[:12]]
    out += [" " + s + " x" for s in SPECIALS[:12]] + ["x" + s + "y" for s in SPECIALS[:12]]
    while len(out) < n:
        parts = [_fragment(rng) for _ in range(rng.randint(1, 8))]
        out.append(_join(rng, parts))
    # surrogates cannot reach HF (PyO3 refuses them); the invalid-UTF-8 test covers bytes
    out = [s.encode("utf-8", "replace").decode("utf-8") for s in out[:n]]
    _CACHE = out
    return out


def invalid_utf8_samples() -> list[bytes]:
    """Byte strings that are not UTF-8: lone continuation bytes, truncated sequences, overlongs,
    surrogates, bytes never valid (C0, F5..FF), mixed with valid text."""
    return [b"\x80", b"abc\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf",
            b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
            b"hello \xfe world", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc", b"<s>\x80</s>",
            b"\xe6\x97\xa5\xe6\x9c", b"caf\xe9", b"\x00\x01\x7f", b"\xef\xbb\xbfBOM"]


if __name__ == "__main__":
    c = corpus()
    print(len(c), sum(len(s) for s in c))
