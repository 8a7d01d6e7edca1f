"""Texts for the tokenizer reference tests: every script and shape the issue lists (English,
code, numbers, CJK, Arabic, emoji and combining marks, whitespace runs, special tokens), written
by hand and then drawn at random (seeded) from the same alphabet."""
import random

HANDWRITTEN = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; don't you think they'll come?",
    "I'm sure we've seen THAT before—haven't we?!",
    "def add(a, b):\n    return a + b\n\n\nclass Foo(object):\n\tpass\n",
    "for (int i = 0; i < n; ++i) {\n  sum += v[i] * 2;  // accumulate\n}\n",
    "    indented  with   runs     of spaces   ",
    "x = {'key': [1, 2, 3], \"other\": None}  # comment",
    "<div class=\"a\">&nbsp;</div> https://example.com/path?q=1&r=2#frag",
    "1234567890 3.14159 1,000,000 2024-01-01T12:34:56Z -42 +7 0x1F 1e-9",
    "١٢٣ ٤٥٦ ०१२३ ①②③ ½ ² Ⅻ",
    "我们今天去公园散步，天气很好。你好世界！中文、日本語、한국어",
    "東京は日本の首都です。ひらがなとカタカナ、漢字を混ぜた文章。ｶﾀｶﾅ",
    "안녕하세요 세계, 반갑습니다.",
    "مرحبا بالعالم، كيف حالك؟ هذا نص عربي.",
    "שלום עולם",
    "नमस्ते दुनिया, यह हिंदी है।",
    "สวัสดีชาวโลก",
    "Привет, мир! Ёжик в тумане.",
    "Ελληνικά γράμματα: αβγδ",
    "emoji 👍🏽 👨‍👩‍👧‍👦 🇯🇵🇺🇸 ❤️ 🤖✨ 😀😃😄",
    "combining: e\u0301 a\u0308\u0323 n\u0303 Z\u0351\u0352\u0353 \u0301start",
    "tabs\tand\ttabs\t\t\tend",
    "lines\n\n\nmany\r\nwindows\r\n\r\nand\rcarriage",
    "   leading spaces",
    "trailing spaces   ",
    "  \n  x",
    " \t \n",
    "\u00a0non-breaking\u00a0space\u3000ideographic\u2003em\u2009thin\u200bzero-width\ufeffbom",
    "\u0085next-line\u2028line-sep\u2029para-sep\x0bvertical\x0cform",
    "control\x00chars\x01\x1f\x7f",
    "math ∑∫∂√∞ ≤≥≠ → ⇒ ∀x∃y",
    "punctuation!!! ??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "'s 't 're 've 'm 'll 'd 'S 'T",
    "<｜User｜>Hello<｜Assistant｜>Hi there<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>system prompt<｜User｜>question",
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather",
    "almost special: <｜User <｜Userx｜> <|User|> <think> </think> <｜end▁of▁sentence",
    "<think>\nreasoning here\n</think>\n\nThe answer is 42.",
    "a" * 300,
    " " * 100 + "x",
    "\n" * 50,
    "ab" * 200 + " " + "汉" * 100,
    "",
]

_POOL = (
    [chr(c) for c in range(0x20, 0x7F)] * 6
    + list("\t\n\r  \u00a0\u3000\u2003\u200b\ufeff")
    + list("0123456789") * 2
    + list("éèêëàâäôöüçñßøåæœ")
    + list("我们今天去公园散步天气很好你好世界中文日本語東京首都")
    + list("ひらがなカタカナ한국어안녕하세요")
    + list("مرحبابالعالمكيفحالك")
    + list("שלוםעולם")
    + list("नमस्तेदुनिया")
    + list("Приветмир")
    + ["\u0301", "\u0308", "\u0323", "\u0303", "\u200d", "\ufe0f"]
    + ["👍", "🏽", "👨", "👩", "👧", "🇯", "🇵", "❤", "🤖", "✨", "😀"]
    + list("，。！？、；：「」（）【】《》—…·")
    + list("∑∫∂√∞≤≥≠→⇒")
    + ["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<think>", "</think>", "<｜"]
)


def fuzz(count, seed, max_length=60):
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(1, max_length)))
            for _ in range(count)]


def all_texts():
    return HANDWRITTEN + fuzz(400, seed=4)


def training_text():
    """Text for training small tokenizers: the corpus, repeated with variations."""
    rng = random.Random(7)
    parts = HANDWRITTEN * 3 + fuzz(300, seed=11, max_length=200)
    rng.shuffle(parts)
    return "\n".join(parts)
