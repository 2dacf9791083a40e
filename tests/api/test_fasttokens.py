"""The C pre-tokenizer and BPE give exactly the `tokenizers` library's pre-tokens and ids (supernode.api.fasttokens).

Pre-tokens are compared with the library's own DeepSeek V3 split sequence for every code point Python knows
(in contexts that exercise each class of the regexes) and on fuzzed text; ids with the library's encoding
of a trained DeepSeek-like tokenizer, for whole texts and for single pre-tokens merged by the C BPE.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from tokenizer_builders import mixed_text, train
from tokenizers import Regex, Tokenizer, pre_tokenizers

from supernode.api import fasttokens as F
from supernode.api.prompttokens import PromptTokenizer
from supernode.api.tokenchunks import DEEPSEEK_SPLITS, LLAMA3_SPLIT

pytestmark = pytest.mark.skipif(not F.available(), reason="the C extension was not built (no compiler)")

_REFERENCES = {
    "deepseek": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), "isolated") for r in DEEPSEEK_SPLITS]),
    "llama3": pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
}
# Characters the regexes treat apart: kana punctuation and symbols inside the CJK class, marks, digits of
# other scripts, Unicode white space that Python's isspace() disagrees on, format and control characters.
_TRICKY = [*"aZq07.!?;:,'s _-()<>|{}[]\"", " ", " ", "\n", "\n", "\r", "\t", "\x0b", "\x1c", "\x85", "\u00a0", "\u3000",
           "\u2028", "\u200b", "\u2060", "\ufeff", "中", "文", "。", "\uff0c", "ー", "ぁ", "\u3099", "\u309b", "\u30a0",
           "\u30fb", "ヿ", "²", "٣", "½", "Ⅻ", "é", "\u0301", "🙂", "👍🏽", "€", "Ω", "\x00", "\x7f", "\U000f0001",
           "'", "'", "'s", "'LL", "'Re", "'ve", "'d", "'M", "'T", "\u017f", "'x"]  # Llama 3's contractions, long s


def _reference_pieces(text: str, fam: str = "deepseek") -> list[str]:
    return [p for p, _ in _REFERENCES[fam].pre_tokenize_str(text)]


def _fuzz(seed: int, count: int, longest: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_TRICKY) for _ in range(rng.randint(1, longest))) for _ in range(count)]


@pytest.fixture(scope="module")
def deepseek() -> Tokenizer:
    return train("deepseek", 3000, 80_000, seed=3)


def _text_only(spec: dict[str, Any]) -> Tokenizer:
    """The library tokenizer with its added (control) tokens removed: client text is encoded as text."""
    return Tokenizer.from_str(json.dumps({**spec, "added_tokens": []}))


def _contexts(c: str) -> str:
    return f"x{c}y {c}{c}1{c}!{c} {c}a\n{c}中{c}\t{c}{c}{c}{c}'{c}"


@pytest.mark.parametrize("fam", ["deepseek", "llama3"])
def test_pieces_match_the_library_for_every_code_point_python_knows(fam: str) -> None:
    table = F.table_for(fam)
    # the BMP whole, the other planes sampled (private use planes are one class)
    points = [c for c in range(0x110000) if not table[c] & F.F_UNTRUSTED and (c < 0x10000 or c % 11 == 0)]
    for start in range(0, len(points), 20_000):
        chars = [chr(c) for c in points[start:start + 20_000]]
        text = "\n".join(map(_contexts, chars))
        if F.pieces(text, fam) != _reference_pieces(text, fam):
            wrong = [hex(ord(c)) for c in chars if F.pieces(_contexts(c), fam) != _reference_pieces(_contexts(c), fam)]
            pytest.fail(f"pre-tokens differ around code points {wrong[:20]}")


@pytest.mark.parametrize("fam", ["deepseek", "llama3"])
def test_fuzzed_text_has_the_library_pieces_and_untrusted_text_is_refused(fam: str) -> None:
    for text in _fuzz(5, 3000, 60):
        assert F.pieces(text, fam) == _reference_pieces(text, fam), repr(text)
    assert F.pieces("ok \U000e0080 unassigned", fam) is None
    assert F.pieces("ok \U000e0080 unassigned") is None
    assert F.pieces("ok \ud800 surrogate") is None
    assert F.pieces("kana \u3040 gap") is None  # unassigned inside the CJK class
    assert F.pieces("") == []


def test_texts_encode_to_the_library_ids(deepseek: Tokenizer) -> None:
    tok, library = PromptTokenizer(deepseek), _text_only(json.loads(deepseek.to_str()))
    assert tok.fast is not None and tok.fast.native_bpe
    texts = _fuzz(9, 600, 200) + ["".join(mixed_text(seed, 4000)) for seed in range(8)]
    for text in texts + texts:  # cold, then every pre-token cached
        assert tok.encode_text(text) == library.encode(text, add_special_tokens=False).ids, repr(text[:80])
    assert tok.fast.cached_pieces > 500


def _vocabulary_words(vocab: dict[str, int], count: int) -> list[str]:
    """Texts whose bytes are whole vocabulary entries (a byte-level entry spells bytes, one character each)."""
    to_byte = {ch: b for b, ch in enumerate(F.byte_level_alphabet())}
    words = []
    for token in list(vocab)[-count:]:
        try:
            words.append(bytes(to_byte[ch] for ch in token).decode())
        except (KeyError, UnicodeDecodeError):
            continue
    return words


def test_the_c_bpe_merges_words_as_the_library(deepseek: Tokenizer) -> None:
    spec = json.loads(deepseek.to_str())
    rng = random.Random(11)
    words = _fuzz(13, 3000, 24) + ["".join(rng.choice("etaoin shrdlu") for _ in range(40)) for _ in range(300)]
    words += _vocabulary_words(spec["model"]["vocab"], 400)
    for ignore_merges in (False, True):  # Llama 3 style models take a whole word found in the vocabulary first
        spec["model"]["ignore_merges"] = ignore_merges
        encoder, library = F.FastEncoder(spec), F.piece_tokenizer(spec)
        assert encoder.native_bpe
        for word in words:
            assert list(encoder.word(word)) == library.encode(word, add_special_tokens=False).ids, repr(word)
        whole = _text_only(spec)
        for text in _fuzz(17, 200, 120):
            assert encoder.encode(text) == whole.encode(text, add_special_tokens=False).ids, repr(text)


def test_models_the_c_bpe_does_not_cover_and_a_small_cache_stay_exact(deepseek: Tokenizer) -> None:
    spec = json.loads(deepseek.to_str())
    model = dict(spec["model"])
    spec["model"]["byte_fallback"] = True  # no effect on byte-level text; the C BPE leaves it to the library
    library = _text_only(spec)
    for encoder, native_bpe in ((F.FastEncoder(spec, max_chars=400), False),
                                (F.FastEncoder({**spec, "model": model}, max_chars=400), True)):
        assert encoder.native_bpe is native_bpe
        for text in [*_fuzz(21, 200, 150), "".join(mixed_text(40, 3000))]:
            assert encoder.encode(text) == library.encode(text, add_special_tokens=False).ids, repr(text)
        assert encoder.restarts > 3  # the cache filled up and started afresh, many times
        assert encoder.encode("x \U000e0080") is None and encoder.fallbacks == 1


def test_llama3_texts_encode_to_the_library_ids() -> None:
    raw = train("llama3", 1500, 40_000, seed=2)
    tok, library = PromptTokenizer(raw), _text_only(json.loads(raw.to_str()))
    assert tok.fast is not None and tok.fast.family == "llama3" and tok.fast.native_bpe
    for text in _fuzz(19, 400, 200) + ["".join(mixed_text(seed, 3000)) for seed in range(3)]:
        assert tok.encode_text(text) == library.encode(text, add_special_tokens=False).ids, repr(text[:80])


def test_only_known_families_get_the_fast_path_and_untrusted_text_falls_back(deepseek: Tokenizer) -> None:
    assert PromptTokenizer(train("gpt2", 600, 20_000, seed=2)).fast is None
    assert PromptTokenizer(deepseek, fast=False).fast is None
    tok = PromptTokenizer(deepseek)
    text = "unassigned \U000e0080 and kana \u3040 here. <think> " * 3
    assert tok.encode_text(text) == _text_only(json.loads(deepseek.to_str())).encode(text).ids
    assert tok.fast is not None and tok.fast.fallbacks >= 1


def test_bad_arguments_are_refused() -> None:
    native = F._native
    assert native is not None
    with pytest.raises(ValueError, match="table"):
        native.pieces(b"short", "text", 0)
    with pytest.raises(TypeError):
        native.pieces(F.deepseek_table(), b"bytes", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="family"):
        native.pieces(F.deepseek_table(), "text", 7)
    with pytest.raises(ValueError, match="table"):
        native.Encoder(b"short", None, 100)
    with pytest.raises(TypeError, match="bpe"):
        native.Encoder(F.deepseek_table(), [], 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_chars"):
        native.Encoder(F.deepseek_table(), None, 0)
    encoder = native.Encoder(F.deepseek_table(), None, 100)
    with pytest.raises(TypeError, match="str"):
        encoder.encode(b"bytes")  # type: ignore[arg-type]
    assert encoder.encode("two words") == (None, ["two", " words"])
    encoder.add("two", [1])
    encoder.add(" words", [2, 3])
    assert encoder.encode("two words") == ([1, 2, 3], []) and encoder.size() == (2, 9, 0)
    with pytest.raises(ValueError, match="256"):
        native.Bpe([0] * 3, b"", None)


def test_threads_sharing_one_encoder_get_exact_ids(deepseek: Tokenizer) -> None:
    """The router encodes on the event loop and in a thread pool at once: one encoder, a cache small enough to
    restart under them, and every thread's ids exact. Texts of 16k characters or more are encoded with the GIL
    released (the C code's own mutex guards the cache), shorter ones with it held: both run here at once."""
    spec = json.loads(deepseek.to_str())
    encoder, library = F.FastEncoder(spec, max_chars=6_000), _text_only(spec)
    texts = ["".join(mixed_text(seed, 2500 if seed % 2 else 20_000)) for seed in range(50, 58)]
    assert max(map(len, texts)) >= 16_384 > min(map(len, texts))
    want = [library.encode(t, add_special_tokens=False).ids for t in texts]
    errors: list[str] = []

    def work(offset: int) -> None:
        for k in range(16):
            i = (offset + k) % len(texts)
            if encoder.encode(texts[i]) != want[i]:
                errors.append(f"text {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and encoder.restarts > 0
