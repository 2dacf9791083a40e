"""The checkpoint's tokenizer (``tokenizer.json``) and incremental detokenisation.

Prompts are encoded by the shared ``supernode.api.prompttokens.PromptTokenizer`` (the router encodes
with the same class): client text stays text, control tokens come only from the chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from supernode.api import chattokens as T
from supernode.api.prompttokens import Piece, PromptTokenizer

__all__ = ["IncrementalDecoder", "Piece", "Tokenizer"]


class Tokenizer(PromptTokenizer):
    """The shared prompt encoder plus what generation needs: EOS and ``</think>`` ids, decoding."""

    def __init__(self, tok: HFTokenizer) -> None:
        super().__init__(tok)
        # Upper bound of characters one token can cover (used to refuse hopeless prompts before encoding).
        regular = [t for t, i in tok.get_vocab(with_added_tokens=False).items() if i not in self.control_ids]
        # A normalizer may shrink text (e.g. compose or strip characters): then no safe bound is known.
        longest = max((len(t) for t in regular), default=1)
        self.max_token_chars: int = longest if not _normalizes(self.spec.get("normalizer")) else 1 << 40
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

    def to_json(self) -> str:
        """The full ``tokenizer.json`` (served to routers at ``GET /v1/tokenizer``)."""
        return str(self._tok.to_str())

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

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
