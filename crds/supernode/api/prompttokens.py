"""Prompt token ids as the engine computes them: the one encoder the engine and the router share.

Client text is always encoded by a *text-only* copy of the tokenizer (its added-token table removed),
so ``<think>`` or ``<｜User｜>`` written by a client become ordinary text tokens; control tokens enter a
prompt only as ``Piece(..., special=True)`` from the chat template (docs/security.md).

Each text piece is encoded on its own, so a prompt's ids are the concatenation of its pieces' ids: the
router caches the ids of long pieces (system prompts, earlier turns, tool catalogues) in a ``PieceCache``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer as HFTokenizer


class Piece(NamedTuple):
    """One part of a rendered prompt: client or template text, or one control token (``special``)."""

    text: str
    special: bool = False


class PieceCache:
    """LRU of text piece → token ids, bounded by the characters it holds; safe across threads."""

    def __init__(self, max_chars: int = 32 << 20, min_chars: int = 256) -> None:
        self.max_chars, self.min_chars = max_chars, min_chars
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> tuple[int, ...] | None:
        if len(text) < self.min_chars:
            return None
        with self._lock:
            ids = self._entries.get(text)
            if ids is None:
                self.misses += 1
                return None
            self._entries.move_to_end(text)
            self.hits += 1
            return ids

    def put(self, text: str, ids: tuple[int, ...]) -> None:
        if len(text) < self.min_chars or len(text) > self.max_chars:
            return
        with self._lock:
            if text in self._entries:
                return
            self._entries[text] = ids
            self._chars += len(text)
            while self._chars > self.max_chars:
                old, _ = self._entries.popitem(last=False)
                self._chars -= len(old)

    def uncached_chars(self, pieces: Iterable[Piece]) -> int:
        """Characters of text pieces that would have to be encoded (for the off-loop decision)."""
        with self._lock:
            return sum(len(p.text) for p in pieces if not p.special and p.text not in self._entries)


class PromptTokenizer:
    """A ``tokenizer.json`` with its control-token ids resolved once; encodes prompts as the engine does."""

    def __init__(self, tok: HFTokenizer) -> None:
        self._tok = tok
        spec = json.loads(tok.to_str())
        added = spec.get("added_tokens") or []
        spec["added_tokens"] = []  # no added-token matching: what a client writes stays text
        self._text_tok = HFTokenizer.from_str(json.dumps(spec))
        self.spec = spec
        self.control_ids: frozenset[int] = frozenset(int(a["id"]) for a in added)
        self._special: dict[str, int] = {str(a["content"]): int(a["id"]) for a in added}

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTokenizer:
        return cls(HFTokenizer.from_file(str(path)))

    @classmethod
    def from_str(cls, text: str) -> PromptTokenizer:
        return cls(HFTokenizer.from_str(text))

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
        found = self._special.get(token)
        if found is None:
            raise ValueError(f"tokenizer has no control token {token!r}")
        return found

    def token_id(self, token: str) -> int | None:
        """The id of a token spelled exactly so (e.g. a control token), or None if the vocabulary lacks it."""
        found = self._tok.token_to_id(token)
        return None if found is None else int(found)

    def encode_pieces(self, pieces: Iterable[Piece], cache: PieceCache | None = None) -> list[int]:
        """A rendered prompt's ids: one id per control piece, text pieces encoded as text (misses in one batch)."""
        pieces = [p for p in pieces if p.special or p.text]
        known: dict[str, tuple[int, ...]] = {}
        if cache is not None:
            known = {p.text: hit for p in pieces if not p.special and (hit := cache.get(p.text)) is not None}
        texts = list(dict.fromkeys(p.text for p in pieces if not p.special and p.text not in known))
        if texts:
            for text, enc in zip(texts, self._text_tok.encode_batch(texts, add_special_tokens=False), strict=True):
                known[text] = tuple(enc.ids)
                if cache is not None:
                    cache.put(text, known[text])
        out: list[int] = []
        for piece in pieces:
            if piece.special:
                out.append(self.special_id(piece.text))
            else:
                out += known[piece.text]
        return out


def tokenizer_digest(tokenizer_json: str) -> str:
    """A tokenizer's identity: the SHA-256 of its ``tokenizer.json`` text."""
    return hashlib.sha256(tokenizer_json.encode()).hexdigest()
