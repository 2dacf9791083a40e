"""Prompt token ids as the engine computes them: the one encoder the engine and the router share.

Client text is always encoded by a *text-only* copy of the tokenizer (its added-token table removed),
so ``<think>`` or ``<｜User｜>`` written by a client become ordinary text tokens; control tokens enter a
prompt only as ``Piece(..., special=True)`` from the chat template (docs/security.md).

Each text piece is encoded on its own, so a prompt's ids are the concatenation of its pieces' ids: the
router caches the ids of long pieces (system prompts, earlier turns, tool catalogues) in a ``PieceCache``.
A long piece is further cut into chunks where its tokenizer provably splits anyway (``tokenchunks``):
the chunks are cached one by one, so the ids are those of one plain encode of the piece.

Text of a DeepSeek-family tokenizer is encoded by ``fasttokens`` (a C pre-tokenizer and BPE with a cache
of pre-token ids, ~20x less CPU); other tokenizers, texts with characters it does not trust, and installs
without the C extension go through ``encode_batch_fast`` (in parallel, no offsets).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer as HFTokenizer

from supernode.api.fasttokens import FastEncoder, fast_encoder
from supernode.api.tokenchunks import PROBE, Chunker, family, holds_for


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

    def __init__(self, tok: HFTokenizer, *, chunk_chars: int = 512, fast: bool = True) -> None:
        """``chunk_chars``: the least characters of a chunk of a long text piece (0: pieces are never cut);
        ``fast``: use ``fasttokens`` where it applies (it checks itself against this tokenizer first)."""
        self._tok = tok
        spec = json.loads(tok.to_str())
        added = spec.get("added_tokens") or []
        spec["added_tokens"] = []  # no added-token matching: what a client writes stays text
        self._text_tok = HFTokenizer.from_str(json.dumps(spec))
        self.spec = spec
        self.chunker = Chunker.for_spec(spec, chunk_chars) if chunk_chars > 0 else Chunker(None)
        if self.chunker.enabled and not holds_for(self.chunker, self._library_encode):
            self.chunker = Chunker(None)  # a recognised family that does not behave as its rules say: no cuts
        self.fast: FastEncoder | None = fast_encoder(spec, family(spec), self._library_encode, PROBE) if fast else None
        # add_special_tokens changes nothing for these post-processors: text may be cut for them too
        self._plain_post = (spec.get("post_processor") or {}).get("type") in (None, "ByteLevel")
        self.control_ids: frozenset[int] = frozenset(int(a["id"]) for a in added)
        self._special: dict[str, int] = {str(a["content"]): int(a["id"]) for a in added}

    def _library_encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(enc.ids) for enc in self._text_tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def _encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Client texts' ids: by the fast encoder where it applies, all others by the library."""
        if self.fast is None:
            return self._library_texts(texts)
        out = [self.fast.encode(text) for text in texts]
        rest = [i for i, ids in enumerate(out) if ids is None]
        for i, ids in zip(rest, self._library_texts([texts[i] for i in rest]), strict=True):
            out[i] = ids
        return out  # type: ignore[return-value]

    def _library_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Texts' ids from the library: long ones cut into chunks, every chunk in one parallel call."""
        parts = [self.chunker.split(text) for text in texts]
        encoded = iter(self._library_encode([chunk for chunks in parts for chunk in chunks]))
        out = []
        for chunks in parts:
            ids: list[int] = []
            for _ in chunks:
                ids += next(encoded)
            out.append(ids)
        return out

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

        Both encoders release the GIL for large inputs (the library in ``encode_batch_fast``, the fast encoder
        for texts of 16k+ characters), so a large input run in a worker thread does not stall the event loop.
        """
        if add_special_tokens and not self._plain_post:  # e.g. a BOS template: the whole text in one call
            return list(self._text_tok.encode_batch_fast([text], add_special_tokens=True)[0].ids)
        return self._encode_texts([text])[0]

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
            self._encode_missing(texts, known, cache)
        out: list[int] = []
        for piece in pieces:
            if piece.special:
                out.append(self.special_id(piece.text))
            else:
                out += known[piece.text]
        return out

    def _encode_missing(self, texts: list[str], known: dict[str, tuple[int, ...]], cache: PieceCache | None) -> None:
        """Encode ``texts`` into ``known``. For the library, long ones in chunks, chunks found in ``cache``
        taken from it, all others encoded together; the fast encoder takes each text whole (re-encoding an
        edited text costs it less than cutting it, and its pre-token cache knows the unchanged words)."""
        split = {text: [text] if self.fast is not None else self.chunker.split(text) for text in texts}
        chunks = {c for parts in split.values() if len(parts) > 1 for c in parts}  # cached one by one
        have: dict[str, tuple[int, ...]] = {}
        if cache is not None:
            have = {c: hit for c in chunks if (hit := cache.get(c)) is not None}
        todo = list(dict.fromkeys(c for parts in split.values() for c in parts if c not in have))
        if todo:
            for chunk, chunk_ids in zip(todo, self._encode_texts(todo), strict=True):
                have[chunk] = tuple(chunk_ids)
                if cache is not None and chunk in chunks:
                    cache.put(chunk, have[chunk])
        for text, parts in split.items():
            if len(parts) == 1:
                ids = have[text]
            else:
                joined: list[int] = []
                for c in parts:
                    joined += have[c]
                ids = tuple(joined)
            known[text] = ids
            if cache is not None:
                cache.put(text, ids)


def tokenizer_digest(tokenizer_json: str) -> str:
    """A tokenizer's identity: the SHA-256 of its ``tokenizer.json`` text."""
    return hashlib.sha256(tokenizer_json.encode()).hexdigest()
