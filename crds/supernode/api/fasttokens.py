"""A fast, exact encoder for DeepSeek V3- and Llama 3-family tokenizers: one C scan plus a pre-token cache.

Why: the ``tokenizers`` library spends nearly all of a long prompt's encoding time in its pre-tokenizer
(three Oniguruma regex passes with Unicode classes: ~0.3 µs per character). Byte-level BPE then works on
each pre-token alone, so a pre-token's ids never depend on its neighbours and can be cached; natural text
repeats its words, so almost every pre-token of a new prompt has been seen before.

The DeepSeek V3 pre-tokenizer is ``Sequence[Split(D), Split(C), Split(M), ByteLevel(use_regex=False)]``,
each ``Split`` isolating: ``D = \\p{N}{1,3}``, ``C`` = runs of the CJK class, ``M`` the main regex
(``tokenchunks.DEEPSEEK_SPLITS``). The first two splits leave segments of three kinds: digit groups, CJK
runs, and plain text with neither; ``M`` then cuts each segment alone. ``_fasttokens.c`` reproduces that
in one pass:

- a digit group stays whole (no alternative of ``M`` matches inside one);
- a CJK run is cut by ``M`` on its own (the class holds kana punctuation and symbols, which ``M`` splits
  off), with the run's characters' own classes;
- plain text is cut in one scan with ``M``'s classes minus digits and CJK, so no match runs past its
  segment, and with ``M``'s ``(?!\\S)`` seeing a digit or CJK character as the segment's end it was.
  Digit groups and CJK runs cannot start inside a match of ``M`` there, so they are found where the first
  two splits find them. Text where no alternative matches is a piece of its own (an isolating split keeps
  it), in both.

The Llama 3 (cl100k-style) pre-tokenizer is one isolating split by ``tokenchunks.LLAMA3_SPLIT`` and then
``ByteLevel``: the scan follows that regex's alternatives in order, with its own table (letters without
marks, digits, white space, and the two negated classes); its case-insensitive contractions take the
ASCII letters and the long s, which Unicode case folding maps to ``s``.

Character classes come from Python's ``unicodedata``. Characters it does not know (``Cn``) and surrogates
are *untrusted*: a text holding one is encoded by ``tokenizers`` as before, so a newer Unicode version in
the tokenizer's regex engine changes nothing. ``tests/api/test_fasttokens.py`` compares the pieces with
the library's for every assigned code point in several contexts, and on fuzzed text.

The cache lives in C (code points and ids in two arrays, an open-addressing index): no Python object per
pre-token. A pre-token missing from it is merged by the C BPE (``Bpe``: the library's merge order and
stale-entry rule, for plain byte-level models) and kept. Models with options it lacks (dropout, byte
fallback, an unknown token, word prefixes or suffixes) have their missing pre-tokens encoded by a copy of
the tokenizer whose pre-tokenizer is only the final ``ByteLevel`` step, so each piece reaches the model
whole as in the full pipeline. The cache holds ``max_chars`` characters of pre-tokens and then starts
afresh. A text of 16k characters or more is encoded with the GIL released (a mutex in C guards the cache),
so a worker thread's call leaves the event loop free; shorter ones (~0.2 ms for a 2k-token prompt whose
words are cached) keep it, so a call on the event loop never waits to get it back.
"""

from __future__ import annotations

import json
import logging
import threading
import unicodedata
from array import array
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache
from typing import Any, Final

from tokenizers import Tokenizer as HFTokenizer

try:
    from supernode.api import _fasttokens as _native
except ImportError:  # built without a C compiler: every text goes through `tokenizers`
    _native = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Flag bits per code point; _fasttokens.c uses the same values.
F_N: Final = 1
F_CJK: Final = 2
F_LM: Final = 4
F_PS: Final = 8
F_WS: Final = 16
F_PREFIX: Final = 32
F_UNTRUSTED: Final = 64

CJK_RANGES: Final = ((0x4E00, 0x9FA5), (0x3040, 0x309F), (0x30A0, 0x30FF))  # the CJK split's class
# \s in the tokenizer's regexes: Unicode White_Space (not Python's str.isspace, which adds \x1c-\x1f).
WHITE_SPACE: Final = frozenset(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)
_RN: Final = (0x0A, 0x0D)
CODE_POINTS: Final = 0x110000


# The Llama 3 (cl100k-style) split's classes (see pretok.c's match_llama3).
L3_L: Final = 1
L3_N: Final = 2
L3_OTHER: Final = 8
L3_WS: Final = 16
L3_PREFIX: Final = 32
FAMILIES: Final = {"deepseek": 0, "llama3": 1}


def _deepseek_flags(category: str) -> int:
    """The main regex's classes of a general category (digits are apart; CJK and white space come after)."""
    major = category[0]
    if major in "LM":
        return F_LM | (F_PREFIX if major == "M" else 0)
    return F_PS if major in "PS" else F_N if major == "N" else F_PREFIX


def _llama3_flags(category: str) -> int:
    major = category[0]
    return L3_L if major == "L" else L3_N if major == "N" else L3_PREFIX | L3_OTHER


def _table(flags_of: Callable[[str], int], white_space: int, prefix: int) -> bytearray:
    """One flag byte per code point: ``flags_of`` its general category (unknown ones untrusted), then the
    white space characters (all but \\r and \\n also a prefix)."""
    categories = list(map(unicodedata.category, map(chr, range(CODE_POINTS))))
    flags = {cat: F_UNTRUSTED if cat in ("Cn", "Cs") else flags_of(cat) for cat in set(categories)}
    table = bytearray(map(flags.__getitem__, categories))
    for cp in WHITE_SPACE:
        table[cp] = white_space | (0 if cp in _RN else prefix)
    return table


@lru_cache(maxsize=1)
def deepseek_table() -> bytes:
    """The DeepSeek V3 pre-tokenizer's table (built once per process, ~0.2 s)."""
    table = _table(_deepseek_flags, F_WS, F_PREFIX)
    for lo, hi in CJK_RANGES:  # the CJK split's runs, which the main regex then cuts alone with these classes
        table[lo : hi + 1] = bytes(F_CJK | table[cp] for cp in range(lo, hi + 1))
    return bytes(table)


@lru_cache(maxsize=1)
def llama3_table() -> bytes:
    """The Llama 3 split's table (built once per process, ~0.2 s)."""
    return bytes(_table(_llama3_flags, L3_WS, L3_PREFIX))


def table_for(family_name: str) -> bytes:
    return deepseek_table() if family_name == "deepseek" else llama3_table()


def available() -> bool:
    """Whether the C scanner was built (no compiler at install time: every text goes through `tokenizers`)."""
    return _native is not None


def pieces(text: str, family_name: str = "deepseek") -> list[str] | None:
    """``text``'s pre-tokens as the family's pre-tokenizer cuts it (``deepseek`` or ``llama3``); None when it
    holds an untrusted character or the scanner is not built."""
    return None if _native is None else _native.pieces(table_for(family_name), text, FAMILIES[family_name])


def byte_level_alphabet() -> list[str]:
    """The character ``ByteLevel`` writes for each byte value (GPT-2's table): printable Latin-1 bytes stand
    for themselves, the other 68 take the code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    extra = iter(range(256, 256 + 256 - len(keep)))
    kept = set(keep)
    return [chr(b) if b in kept else chr(next(extra)) for b in range(256)]


def _merge_pairs(merges: list[Any]) -> list[tuple[str, str]]:
    """``model.merges`` in either spelling: ``["a b", ...]`` or ``[["a", "b"], ...]``."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]  # type: ignore[misc]


def native_bpe(model: dict[str, Any]) -> Any | None:
    """The C BPE for a ``tokenizer.json`` model it merges exactly as `tokenizers` does, else None: plain
    byte-level BPE (every byte's character in the vocabulary; no dropout, unknown token, byte fallback,
    word prefix or suffix)."""
    if _native is None or model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback"):
        return None
    if model.get("unk_token") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    vocab: dict[str, int] = model.get("vocab") or {}
    alphabet = byte_level_alphabet()
    if any(ch not in vocab for ch in alphabet):
        return None
    byte_ids = [vocab[ch] for ch in alphabet]
    quads = array("i")
    for rank, (left, right) in enumerate(_merge_pairs(model.get("merges") or [])):
        ids = vocab.get(left), vocab.get(right), vocab.get(left + right)
        if None in ids:
            return None  # a merge outside the vocabulary: `tokenizers` refuses such a file anyway
        quads.extend((ids[0], ids[1], rank, ids[2]))  # type: ignore[arg-type]
    whole = None
    if model.get("ignore_merges"):
        to_byte = {ch: b for b, ch in enumerate(alphabet)}
        whole = {bytes(to_byte[ch] for ch in token): i for token, i in vocab.items()
                 if all(ch in to_byte for ch in token)}
    return _native.Bpe(byte_ids, quads.tobytes(), whole)


def piece_tokenizer(spec: dict[str, Any]) -> HFTokenizer:
    """A copy of a DeepSeek- or Llama 3-family tokenizer that encodes one pre-token: no split regexes, no
    added tokens, no post-processing; only the final byte-level mapping before the BPE model."""
    spec = dict(spec)
    spec["pre_tokenizer"] = spec["pre_tokenizer"]["pretokenizers"][-1]
    spec["added_tokens"], spec["post_processor"] = [], None
    return HFTokenizer.from_str(json.dumps(spec))


class FastEncoder:
    """Encodes text of one DeepSeek-family tokenizer: the C scan, then each pre-token's ids from the C cache;
    a missing pre-token is merged by the C BPE, or by `tokenizers` when the model has options it lacks."""

    def __init__(self, spec: dict[str, Any], max_chars: int = 4_000_000, family_name: str = "deepseek") -> None:
        """``max_chars``: characters of pre-tokens the cache holds (~5 bytes each with their ids); when full
        it starts afresh, which costs a few cold prompts and bounds memory."""
        if _native is None:
            raise RuntimeError("not implemented: the C pre-tokenizer was not built (no compiler at install)")
        self._spec = spec
        self._bpe = native_bpe(spec["model"])
        self.family = family_name
        self._encoder = _native.Encoder(table_for(family_name), self._bpe, max_chars, FAMILIES[family_name])
        self._lock = threading.Lock()
        self.fallbacks = 0  # texts with an untrusted character, left to `tokenizers`

    @cached_property
    def _piece_tok(self) -> HFTokenizer:
        """The library's BPE for one pre-token: built only when a model's missing pre-tokens need it."""
        return piece_tokenizer(self._spec)

    @property
    def native_bpe(self) -> bool:
        return self._bpe is not None

    def encode(self, text: str) -> list[int] | None:
        """``text``'s ids, or None when it holds an untrusted character (encode it with `tokenizers`)."""
        got = self._encoder.encode(text)
        if got is None:
            self.fallbacks += 1
            return None
        ids, missing = got
        if ids is not None:
            return ids
        with self._lock:  # only for models without the C BPE: the library merges the missing pre-tokens
            for piece, enc in zip(missing, self._piece_tok.encode_batch_fast(missing, add_special_tokens=False),
                                  strict=True):
                self._encoder.add(piece, enc.ids)
            got = self._encoder.encode(text)
        if got is not None and got[0] is not None:
            return got[0]
        out: list[int] = []  # the cache started afresh in between: piece by piece
        for part in pieces(text, self.family) or []:
            out += self.word(part)
        return out

    def word(self, piece: str) -> tuple[int, ...]:
        """One pre-token's ids, merged by the C BPE when there is one."""
        if self._bpe is not None:
            return self._bpe.word(piece)
        return tuple(self._piece_tok.encode(piece, add_special_tokens=False).ids)

    @property
    def cached_pieces(self) -> int:
        return int(self._encoder.size()[0])

    @property
    def restarts(self) -> int:
        """How often the cache filled up and started afresh."""
        return int(self._encoder.size()[2])


def fast_encoder(spec: dict[str, Any], family_name: str | None,
                 reference: Callable[[Sequence[str]], list[list[int]]], probe: str) -> FastEncoder | None:
    """A ``FastEncoder`` for a DeepSeek- or Llama 3-family tokenizer whose ids on ``probe`` equal
    ``reference``'s (the `tokenizers` encoding), else None (encode with `tokenizers`)."""
    if family_name not in FAMILIES or _native is None:
        return None
    encoder = FastEncoder(spec, family_name=family_name)
    if encoder.encode(probe) != reference([probe])[0]:
        log.warning("the fast pre-tokenizer disagrees with the tokenizer on the probe text; not used")
        return None
    return encoder
