"""Two optional parts of the fake engine for the routing benchmark (tests/router/fake_engine.py):

- ``EngineTokens``: real tokenization. The engine serves a ``tokenizer.json`` at ``GET /v1/tokenizer`` as
  the built-in engine does (``supernode.api.tokenizerinfo``), renders chats with the shared template
  and names its cache blocks by the chained hashes of the real token ids. A router fetches it like a
  built-in engine's and computes the same hashes: the precise index and the requests agree through
  the product path, no test seam.
- ``SlotModel``: time to first token from a model instead of the event loop. Each of the engine's
  slots is busy until a known time; a request arriving now starts on the first free slot (FIFO), its
  first token comes after its uncached prefill, and the slot frees after its decode. The engine then
  sleeps to those times (so routers see real in-flight and queue counts) but reports the modelled
  TTFT, which a loaded machine does not distort (only the arrival time is measured).

``build_tokenizer_json`` trains a small byte-level BPE with the chat template's control tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from supernode.api import chattokens as T
from supernode.api.chattemplate import TEMPLATE_ID, chat_prompt
from supernode.api.hashing import block_hashes
from supernode.api.modes import resolve_mode
from supernode.api.prompttokens import PieceCache, PromptTokenizer, tokenizer_digest
from supernode.api.tokenizerinfo import TOKENIZER_PATH, TokenizerInfo

_TOOL_TOKENS = (T.TOOL_CALLS_BEGIN, T.TOOL_CALLS_END, T.TOOL_CALL_BEGIN, T.TOOL_CALL_END, T.TOOL_SEP)


def build_tokenizer_json(corpus: Iterable[str], vocab_size: int = 2000) -> str:
    """A byte-level BPE trained on ``corpus``, with the template's control tokens; its JSON text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=list(T.SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer)
    return str(tok.to_str())


class EngineTokens:
    """The engine's prompt tokens: what it serves at /v1/tokenizer and how it hashes a chat's blocks."""

    def __init__(self, tokenizer_json: str, model: str, block_size: int) -> None:
        self.tok = PromptTokenizer.from_str(tokenizer_json)
        self.info = TokenizerInfo(model=model, hash_seed=model, block_size=block_size, template=TEMPLATE_ID,
                                  digest=tokenizer_digest(tokenizer_json), tokenizer=tokenizer_json)
        self.body = self.info.model_dump_json().encode()
        self.tool_tokens = all(self.tok.token_id(t) is not None for t in _TOOL_TOKENS)
        self.cache = PieceCache()

    def ids(self, body: dict[str, Any]) -> list[int]:
        """The chat's token ids as the built-in engine renders and encodes them (mode from the body)."""
        prompt = chat_prompt(body.get("messages"), body.get("tools"), body.get("tool_choice"), resolve_mode(body),
                             tool_tokens=self.tool_tokens)
        return self.tok.encode_pieces(prompt.pieces, self.cache)

    def hashes(self, body: dict[str, Any]) -> list[int]:
        return block_hashes(self.ids(body), self.info.hash_seed, self.info.block_size)

    def add_route(self, app: FastAPI) -> None:
        @app.get(TOKENIZER_PATH)
        async def tokenizer() -> Response:
            return Response(self.body, media_type="application/json", headers={"etag": self.info.etag})


class SlotModel:
    """Busy-until times of an engine's slots (0 slots = unlimited): when a request arriving now starts
    and gets its first token. Pure arithmetic on the times it is given."""

    def __init__(self, slots: int) -> None:
        self.free_at = [0.0] * slots

    def admit(self, now: float, prefill_s: float, decode_s: float) -> tuple[float, float]:
        """(start, first token) of a request arriving at ``now``; books its slot until its decode ends."""
        if not self.free_at:
            return now, now + prefill_s
        i = min(range(len(self.free_at)), key=self.free_at.__getitem__)
        start = max(now, self.free_at[i])
        first = start + prefill_s
        self.free_at[i] = first + decode_s
        return start, first


def add_stats_route(app: FastAPI, ttfts: list[float]) -> None:
    """GET /ttfts: the modelled TTFTs (seconds) of the streamed requests since the last reset."""

    @app.get("/ttfts")
    async def modelled() -> Response:
        return JSONResponse({"ttfts": ttfts})


@contextlib.asynccontextmanager
async def modelled_slot(st: Any) -> AsyncIterator[Callable[[float, float], Awaitable[float]]]:
    """For one request of the engine state ``st`` (fake_engine.EngineState): yields ``at(prefill_s,
    decode_s)``, which books a slot in ``st.slots``, waits (counted as waiting, then running) until the
    modelled first token, records the modelled TTFT and returns the first token's time."""
    arrival, booked = time.monotonic(), False

    async def at(prefill_s: float, decode_s: float) -> float:
        nonlocal booked
        start, first = st.slots.admit(arrival, prefill_s, decode_s)
        st.waiting += 1
        try:
            await asyncio.sleep(max(0.0, start - time.monotonic()))
        finally:
            st.waiting -= 1
        st.running += 1
        booked = True
        st.ttfts.append(first - arrival)
        await asyncio.sleep(max(0.0, first - time.monotonic()))
        return first

    try:
        yield at
    finally:
        if booked:
            st.running -= 1
