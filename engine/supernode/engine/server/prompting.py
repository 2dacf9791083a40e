"""Prompt encoding for the HTTP layer: hopeless prompts refused before encoding, large ones encoded off the loop.

Encoding megabytes of text takes seconds and, through ``tokenizers.encode``, holds the GIL. So:
1. a prompt whose text cannot fit the context even at the tokenizer's best case (every token covering
   ``Tokenizer.max_token_chars`` characters) is refused with 400 ``context_length_exceeded`` at once;
2. a prompt up to ``inline_chars`` is encoded on the event loop (well under a millisecond);
3. a larger one is encoded in a small worker pool (``encode_batch`` releases the GIL), at most
   ``max_pending`` at a time (else 429), so one huge request never stalls the others.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from supernode.engine.server.protocol import APIError
from supernode.engine.tokenizer import Piece, Tokenizer

INLINE_CHARS = 16_384


class PromptEncoder:
    def __init__(self, workers: int = 2, max_pending: int = 8, inline_chars: int = INLINE_CHARS) -> None:
        self.workers, self.max_pending, self.inline_chars = workers, max_pending, inline_chars
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0
        self._lock = threading.Lock()

    @staticmethod
    def check_fits(tokenizer: Tokenizer, chars: int, fixed_tokens: int, max_model_len: int, param: str) -> None:
        """400 when ``chars`` of text plus ``fixed_tokens`` cannot fit even at the densest tokenization."""
        least = -(-chars // tokenizer.max_token_chars) + fixed_tokens
        if least + 1 > max_model_len:
            msg = (
                f"prompt has at least {least} tokens ({chars} characters); this model's context is {max_model_len}"
            )
            raise APIError(400, msg, param=param, code="context_length_exceeded")

    async def encode_pieces(
        self, tokenizer: Tokenizer, pieces: Sequence[Piece], max_model_len: int, param: str
    ) -> list[int]:
        chars = sum(len(p.text) for p in pieces if not p.special)
        self.check_fits(tokenizer, chars, sum(p.special for p in pieces), max_model_len, param)
        return await self._run(chars, lambda: tokenizer.encode_pieces(pieces))

    async def encode_text(self, tokenizer: Tokenizer, text: str, max_model_len: int, param: str) -> list[int]:
        """A raw completion prompt (text as text; the tokenizer's own BOS/post-processing applies)."""
        self.check_fits(tokenizer, len(text), 0, max_model_len, param)
        return await self._run(len(text), lambda: tokenizer.encode_text(text, add_special_tokens=True))

    async def _run(self, chars: int, work: Callable[[], list[int]]) -> list[int]:
        if chars <= self.inline_chars:
            return work()
        with self._lock:
            if self._pending >= self.max_pending:
                raise APIError(429, "too many large prompts being tokenized; retry shortly", retry_after=1)
            self._pending += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tokenize")
            pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
