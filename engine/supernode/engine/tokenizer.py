"""The checkpoint's tokenizer (``tokenizer.json``) and incremental detokenisation.

Client text is always encoded by a *text-only* copy of the tokenizer (its added-token table removed),
so ``<think>`` or ``<｜User｜>`` written by a client become ordinary text tokens; control tokens enter a
prompt only as ``Piece(..., special=True)`` from the chat template (docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer as HFTokenizer

from supernode.engine import tokens as T


class Piece(NamedTuple):
    """One part of a rendered prompt: client or template text, or one control token (``special``)."""

    text: str
    special: bool = False


class Tokenizer:
    """Thin wrapper over ``tokenizers.Tokenizer`` with the DeepSeek special-token ids resolved once."""

    def __init__(self, tok: HFTokenizer) -> None:
        self._tok = tok
        spec = json.loads(tok.to_str())
        added = spec.get("added_tokens") or []
        spec["added_tokens"] = []  # no added-token matching: what a client writes stays text
        self._text_tok = HFTokenizer.from_str(json.dumps(spec))
        self.control_ids: frozenset[int] = frozenset(int(a["id"]) for a in added)
        # Upper bound of characters one token can cover (used to refuse hopeless prompts before encoding).
        regular = [t for t, i in tok.get_vocab(with_added_tokens=False).items() if i not in self.control_ids]
        # A normalizer may shrink text (e.g. compose or strip characters): then no safe bound is known.
        longest = max((len(t) for t in regular), default=1)
        self.max_token_chars: int = longest if not _normalizes(spec.get("normalizer")) else 1 << 40
        eos, close = tok.token_to_id(T.EOS), tok.token_to_id(T.THINK_CLOSE)
        if eos is None or close is None:
            raise ValueError(f"tokenizer lacks the special tokens {T.EOS!r} and {T.THINK_CLOSE!r}")
        self.eos_id: int = eos
        self.bos_id: int | None = tok.token_to_id(T.BOS)
        self.think_close_id: int = close
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> Tokenizer:
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
        return cls(HFTokenizer.from_file(str(path)))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Encode *trusted* text (control-token spellings become control tokens). Never for client input."""
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_text(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Encode client text as text: control-token spellings are tokenized like any other characters.

        Goes through ``encode_batch``, which releases the GIL, so a large input run in a worker thread
        does not stall the event loop.
        """
        return list(self._text_tok.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids)

    def special_id(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        if found is None or found not in self.control_ids:
            raise ValueError(f"tokenizer has no control token {token!r}")
        return int(found)

    def encode_pieces(self, pieces: Iterable[Piece]) -> list[int]:
        """A rendered prompt's ids: one id per control piece, text pieces encoded as text (in one batch)."""
        pieces = [p for p in pieces if p.special or p.text]
        texts = [p.text for p in pieces if not p.special]
        encoded = iter(self._text_tok.encode_batch(texts, add_special_tokens=False) if texts else ())
        ids: list[int] = []
        for piece in pieces:
            ids += [self.special_id(piece.text)] if piece.special else next(encoded).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def token_id(self, token: str) -> int | None:
        """The id of a token spelled exactly so (e.g. a control token), or None if the vocabulary lacks it."""
        found = self._tok.token_to_id(token)
        return None if found is None else int(found)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (byte-level BPE pieces mapped back; control tokens: their spelling)."""
        piece = self._tok.id_to_token(token_id)
        if piece is None:
            return b""
        if all(ch in _BYTE_OF for ch in piece) and self._tok.decode([token_id], skip_special_tokens=True):
            return bytes(_BYTE_OF[ch] for ch in piece)
        return piece.encode()


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE writes each byte as one printable character; this maps those characters back."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_OF = _byte_level_alphabet()


def _normalizes(normalizer: object) -> bool:
    if not normalizer:
        return False
    if isinstance(normalizer, dict) and normalizer.get("type") == "Sequence":
        return any(_normalizes(n) for n in normalizer.get("normalizers") or ())
    return True


class IncrementalDecoder:
    """Turns a growing token stream into text deltas without ever splitting a UTF-8 character.

    Decodes a short window (``prefix_offset``..end) and emits only text past the already-emitted
    part of that window, holding back while the tail is an incomplete character (U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        full = self._tok.decode(self._ids[self._prefix :])
        if len(full) > len(prefix_text) and not full.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return full[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is held back (at the end of the stream)."""
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        full = self._tok.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return full[len(prefix_text) :]
