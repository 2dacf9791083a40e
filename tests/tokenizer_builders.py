"""Byte-level BPE tokenizers of the three pre-tokenizer families ``supernode.api.tokenchunks`` knows, trained
locally on generated mixed text (prose, code, numbers, CJK, JSON, accents, emoji, control-token lookalikes).

Tests train small ones (a second); the tokenization benchmark trains a DeepSeek-like one with a vocabulary
in the tens of thousands, so its figures are those of a realistic tokenizer rather than a toy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from supernode.api import chattokens as T
from supernode.api.tokenchunks import DEEPSEEK_SPLITS, LLAMA3_SPLIT

FAMILIES = ("gpt2", "llama3", "deepseek")
_CJK_PUNCT = "\uff0c\u3002\u3001\uff1b\uff01\uff1f"  # CJK comma, full stop, enumeration comma, ;, !, ?

_ONSETS = [*"bcdfghjklmnprstvwz", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sc", "sh",
           "sk", "sl", "sp", "st", "str", "th", "tr", "wh"]
_VOWELS = [*"aeiouyéö", "ai", "ea", "ee", "io", "ou", "oo"]
_CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "nt", "rs", "st", "ck", "sh", "th", "x"]
_ODD = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜end▁of▁sentence｜>", "<|im_start|>", "🙂", "👍🏽",
        "e\u0301", "\u200b", "\u00a0", "²", "٣", "ﬁ", "\t", "\r\n", "  ", "\n\n\n", " \n", "'s", "'LL", "--", "...",
        "€"]


class _Lexicon:
    def __init__(self, words: int) -> None:
        rng = random.Random(0)  # one lexicon for every text: seeds vary the text, not the language
        found: set[str] = set()
        while len(found) < words:
            n = rng.choice([1, 1, 1, 2, 2, 2, 3])
            found.add("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n)))
        self.words = sorted(found)
        han = [chr(c) for c in range(0x4E00, 0x4E00 + 4000)] + [chr(c) for c in range(0x3041, 0x3097)]
        self.cjk = ["".join(rng.choice(han) for _ in range(rng.choice([1, 2, 2, 3, 4]))) for _ in range(words // 5)]

    def word(self, rng: random.Random) -> str:
        return self.words[_zipf(rng, len(self.words))]

    def cjk_word(self, rng: random.Random) -> str:
        return self.cjk[_zipf(rng, len(self.cjk))]


def _zipf(rng: random.Random, n: int) -> int:
    """A rank of Zipf's law with exponent 1 (natural language's word frequencies): P(rank < k) = log k / log n."""
    return min(n - 1, int(n ** rng.random()) - 1)


_LEXICONS: dict[int, _Lexicon] = {}


def _lexicon(words: int) -> _Lexicon:
    if words not in _LEXICONS:
        _LEXICONS[words] = _Lexicon(words)
    return _LEXICONS[words]


def _prose(rng: random.Random, lex: _Lexicon) -> str:
    sentences = []
    for _ in range(rng.randint(2, 8)):
        words = [lex.word(rng) for _ in range(rng.randint(4, 22))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 10 ** rng.randint(1, 7))))
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), rng.choice(_ODD))
        sentences.append(" ".join(words) + rng.choice(".....?!;:"))
    return " ".join(sentences)


def _code(rng: random.Random, lex: _Lexicon) -> str:
    lines, indent = [], 0
    for _ in range(rng.randint(3, 14)):
        a, b = lex.word(rng), lex.word(rng)
        line = rng.choice([
            f"def {a}_{b}(self, {a}: int) -> str:", f"{a} = {b}.{a}({rng.randint(0, 999)})",
            f"return {a}[{b}] + {rng.random():.4f}", f"if {a} is not None and {b} > {rng.randint(0, 99)}:",
            f"for {a} in range(len({b})):", f'raise ValueError(f"{a}: {{{b}!r}}")', f"# {a} {b}: see {lex.word(rng)}",
            f"{a}_{b}.append({{'{a}': {rng.randint(0, 9999)}, '{b}': None}})", f"    }} // {a}",
        ])
        lines.append("    " * indent + line)
        indent = min(3, indent + 1) if line.endswith(":") else max(0, indent - rng.randint(0, 1))
    return "\n".join(lines) + "\n"


def _cjk(rng: random.Random, lex: _Lexicon) -> str:
    out = []
    for _ in range(rng.randint(10, 60)):
        out.append(lex.cjk_word(rng))
        if rng.random() < 0.2:
            out.append(rng.choice(_CJK_PUNCT) if rng.random() < 0.9 else f" {lex.word(rng)} {rng.randint(1, 99)}")
    return "".join(out)


def _json(rng: random.Random, lex: _Lexicon) -> str:
    return json.dumps({lex.word(rng): [rng.randint(0, 10 ** rng.randint(1, 9)), lex.word(rng), rng.random()]
                       for _ in range(rng.randint(1, 6))}, ensure_ascii=rng.random() < 0.5)


def mixed_text(seed: int, chars: int, *, lexicon_words: int = 120_000) -> Iterator[str]:
    """Paragraphs of generated text, about ``chars`` characters in all: ~60% prose, code, CJK and JSON."""
    rng, lex, total = random.Random(seed), _lexicon(lexicon_words), 0
    while total < chars:
        kind = rng.random()
        make = _prose if kind < 0.6 else _code if kind < 0.75 else _cjk if kind < 0.87 else _json
        text = make(rng, lex)
        total += len(text) + 2
        yield text + rng.choice(["\n\n", "\n\n", "\n", " ", "\r\n\r\n", "\n \n"])


def pre_tokenizer(family: str) -> pre_tokenizers.PreTokenizer:
    if family == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    regexes = {"llama3": (LLAMA3_SPLIT,), "deepseek": DEEPSEEK_SPLITS}[family]
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    return pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train(family: str, vocab_size: int, chars: int, *, seed: int = 0, lexicon_words: int = 120_000) -> Tokenizer:
    """A byte-level BPE of ``family`` trained on ``chars`` characters of ``mixed_text``; the DeepSeek chat
    control tokens are added tokens, as in the engine's checkpoints."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(family)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(T.SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(mixed_text(seed, chars, lexicon_words=lexicon_words), trainer)
    return tok
