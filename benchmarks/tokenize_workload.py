"""Helpers of benchmarks/router_tokenize.py: the realistic tokenizer, the router's previous encoder, the prompts.

- ``bench_tokenizer``: a DeepSeek-like byte-level BPE (the DeepSeek V3 pre-tokenizer: digit groups, CJK runs,
  the main split regex, byte-level) trained locally on generated mixed text (tests/tokenizer_builders.py),
  kept in a cache directory so later runs load it in a second;
- ``LegacyPromptTokenizer``: the encoder as it was before chunking (whole text pieces, ``encode_batch`` with
  offsets, the piece cache), run side by side with the current one in the same process;
- ``Workload``: chat requests of a multi-turn service (continuing conversations, new conversations whose
  system prompt carries a per-user header, document questions, fully new prompts) and cold prompts.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tokenizer_builders import mixed_text, train

from supernode.api.prompttokens import Piece, PieceCache, PromptTokenizer

_VERSION = "2"  # bump when tokenizer_builders changes what it trains


def bench_tokenizer(vocab: int, chars: int) -> tuple[Tokenizer, str]:
    """The DeepSeek-like tokenizer and where it came from (trained now, or loaded from the cache)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "supernode-bench"
    path = cache / f"deepseek-like-{vocab}-{chars}-v{_VERSION}.json"
    if path.exists():
        return Tokenizer.from_file(str(path)), f"loaded from {path}"
    t0 = time.perf_counter()
    tok = train("deepseek", vocab, chars)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return tok, f"trained in {time.perf_counter() - t0:.0f} s, saved to {path}"


class LegacyPromptTokenizer(PromptTokenizer):
    """The previous encoder: each missing text piece encoded whole by ``encode_batch`` (offsets included)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__(tok, chunk_chars=0, fast=False)

    def encode_pieces(self, pieces: Iterable[Piece], cache: PieceCache | None = None) -> list[int]:
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
            out += [self.special_id(piece.text)] if piece.special else known[piece.text]
        return out


Messages = list[dict[str, str]]


class Workload:
    """Chat requests sized in tokens of ``tok``; text never seen before unless the scenario repeats it."""

    def __init__(self, tok: PromptTokenizer, seed: int = 1000) -> None:
        self.rng, self._seed = random.Random(seed), seed
        sample = self.text(20_000)
        self.chars_per_token = len(sample) / len(tok.encode_text(sample))
        self.systems = [self.text(self.chars(1200)) for _ in range(4)]  # shared instructions
        self.documents = [self.text(self.chars(1500)) for _ in range(12)]  # a knowledge base
        self.conversations: list[tuple[Messages, list[str]]] = []  # messages, the last reply

    def text(self, chars: int) -> str:
        self._seed += 1
        out = "".join(mixed_text(self._seed, chars))
        return out[:chars]

    def chars(self, tokens: int) -> int:
        return int(tokens * self.chars_per_token)

    def cold(self, tokens: int) -> Messages:
        """~60% system prompt, earlier turns, a new question: all of it text never seen before."""
        chars = self.chars(tokens)
        msgs = [{"role": "system", "content": self.text(int(chars * 0.6))}]
        history = self.text(chars - int(chars * 0.6))
        for i in range(0, len(history), 2400):
            msgs.append({"role": "user" if i % 4800 == 0 else "assistant", "content": history[i: i + 2400]})
        if msgs[-1]["role"] == "user":
            msgs.append({"role": "assistant", "content": self.text(200)})
        msgs.append({"role": "user", "content": self.text(self.chars(60))})
        return msgs

    def _header(self) -> str:
        user, day = self.rng.randrange(10_000), self.rng.randrange(1, 29)
        return f"Today is 2026-12-{day:02d}. You are talking with user {user}; address them by that number.\n"

    def mixed(self) -> tuple[str, Messages, str | None]:
        """One request of the service mix: its kind, its messages and the reply it gets (None: no next turn)."""
        r = self.rng.random()
        if r < 0.1 or (r < 0.6 and not self.conversations):
            return "cold 2k", self.cold(2000), None
        if r < 0.25:  # a question about one document of the knowledge base (same documents, new questions)
            doc = self.rng.choice(self.documents)
            question = self.text(self.chars(40))
            return "document", [{"role": "system", "content": self.systems[0]},
                                {"role": "user", "content": f"{doc}\n\nUsing the document above: {question}"}], None
        reply = self.text(self.chars(self.rng.randint(80, 400)))  # what the model answers this request
        if r < 0.4 or len(self.conversations) < 4:  # a new conversation: shared instructions, per-user header
            msgs = [{"role": "system", "content": self._header() + self.rng.choice(self.systems)},
                    {"role": "user", "content": self.text(self.chars(self.rng.randint(30, 300)))}]
            self.conversations.append((msgs, [reply]))
            del self.conversations[:-32]
            return "new conversation", [dict(m) for m in msgs], reply
        conversation = self.rng.choice(self.conversations)  # the next turn: the last reply, then a new question
        msgs, last = conversation
        msgs += [{"role": "assistant", "content": last[0]},
                 {"role": "user", "content": self.text(self.chars(self.rng.randint(20, 200)))}]
        last[0] = reply
        if len(msgs) > 16:
            self.conversations.remove(conversation)
        return "next turn", [dict(m) for m in msgs], reply


def body(model: str, messages: Messages) -> dict[str, Any]:
    return {"model": model, "messages": messages, "max_tokens": 16}
