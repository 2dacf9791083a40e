"""Outputs from the engine thread to the requests' asyncio queues, one wake-up per event loop per step.

A streaming request gets every update; a non-streaming one only its last (the updates before are held on
its handle and go out together with it), so a long answer costs its event loop one wake-up, not one per
token.
"""

from __future__ import annotations

import asyncio
import contextlib

from supernode.engine.engine_types import Output, RequestHandle

Item = tuple[asyncio.Queue[Output], Output]


class Outbox:
    """Engine thread only."""

    def __init__(self) -> None:
        self._boxes: dict[asyncio.AbstractEventLoop, list[Item]] = {}

    def send(self, handle: RequestHandle, out: Output) -> None:
        if not handle.streaming and out.finish_reason is None and out.error is None:
            handle.held.append(out)
            return
        box = self._boxes.setdefault(handle.loop, [])
        box.extend((handle.queue, held) for held in handle.held)
        handle.held.clear()
        box.append((handle.queue, out))

    def flush(self) -> None:
        """Hand this step's outputs to each event loop in one wake-up (not one per token)."""
        boxes, self._boxes = self._boxes, {}
        for loop, items in boxes.items():
            with contextlib.suppress(RuntimeError):  # the client's event loop is gone
                loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[Item]) -> None:
    for queue, out in items:
        queue.put_nowait(out)
