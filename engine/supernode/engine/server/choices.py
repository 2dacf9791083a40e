"""The one answer path of chat and completions: n choices, streamed as SSE or collected into one body.

Each choice is one engine sequence. Their outputs are merged in arrival order; a ``Format`` turns
them into the endpoint's chunk shapes (streaming) or final body (non-streaming). Whatever way the
response ends (done, client gone, error), every choice's sequence is aborted (a no-op when finished).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import Request
from fastapi.responses import StreamingResponse

from supernode.engine.llm_engine import LLMEngine, Output
from supernode.engine.server.protocol import APIError
from supernode.engine.server.responses import Choice, Format, sse


async def merged(choices: Sequence[Choice]) -> AsyncIterator[tuple[Choice, Output]]:
    """Every output of every choice, as it arrives, until all have finished. An engine error raises APIError."""
    queue: asyncio.Queue[tuple[Choice, Output]] = asyncio.Queue()

    async def pump(c: Choice) -> None:
        async for out in c.handle:
            queue.put_nowait((c, out))

    tasks = [asyncio.ensure_future(pump(c)) for c in choices]
    try:
        remaining = len(choices)
        while remaining:
            c, out = await queue.get()
            if out.error:
                raise APIError(500, out.error, code="engine_error")
            c.absorb(out)
            yield c, out
            if out.finish_reason is not None:
                remaining -= 1
    finally:
        for t in tasks:
            t.cancel()


def abort_all(eng: LLMEngine, choices: Sequence[Choice]) -> None:
    for c in choices:
        eng.abort(c.handle.request_id)


async def collect(request: Request, eng: LLMEngine, choices: Sequence[Choice], fmt: Format) -> dict[str, object]:
    """The whole non-streaming body; a client that disconnects first cancels the request (freeing its blocks)."""

    async def consume() -> None:
        async for _ in merged(choices):
            pass

    async def disconnected() -> None:
        # The body is read, so the next ASGI message is the disconnect: wait for it, no polling.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(consume()), asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            raise APIError(499, "client disconnected", code="cancelled")
        work.result()
        return fmt.body(choices)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
        abort_all(eng, choices)


def stream(
    eng: LLMEngine, choices: Sequence[Choice], fmt: Format, include_usage: bool, headers: dict[str, str]
) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            for c in choices:
                if (first := fmt.opening(c)) is not None:
                    yield sse(first)
            try:
                async for c, out in merged(choices):
                    if (chunk := fmt.chunk(c, out)) is not None:
                        yield sse(chunk)
            except APIError as exc:
                yield sse(exc.body())
            else:
                if include_usage:
                    yield sse(fmt.env.usage_chunk([c.final for c in choices if c.final is not None]))
            yield sse("[DONE]")
        finally:  # client gone or stream done: cancelling a finished request is a no-op
            abort_all(eng, choices)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})
