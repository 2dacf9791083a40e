"""KV events out of the engine: numbered per engine instance, kept for resuming, fanned out to the
`/v1/kv_events` subscribers (asyncio queues) and to sinks (the ZMQ publisher, kv_publisher.py).

The engine thread publishes each step's events and attaches new subscribers (their backlog reads the
block manager, which only that thread touches); the asyncio side subscribes and unsubscribes.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Protocol

from supernode.api.kv_load import EngineLoad
from supernode.engine.core.block_manager import KVEvent

KVQueue = asyncio.Queue[tuple[int, KVEvent] | str | None]  # str: kv_load.LOAD_CHANGED


class KVSink(Protocol):
    """Where KV events go besides /v1/kv_events subscribers (the ZMQ publisher, kv_publisher.py)."""

    def offer(self, events: list[KVEvent]) -> None: ...

    def close(self) -> None: ...


class KVEventStream:
    def __init__(self, keep: int, cached_hashes: Callable[[], list[int]],
                 reuse_ends: Callable[[], tuple[int, ...] | None] = lambda: None):
        self.instance = uuid.uuid4().hex  # names this engine process: a new one means start over
        self.seq = 0  # the last event's number (events are numbered from 1)
        self.sinks: list[KVSink] = []  # offered each step's events on the engine thread; closed by close()
        self._log: deque[tuple[int, KVEvent]] = deque(maxlen=keep)
        self._cached_hashes = cached_hashes
        self._reuse_ends = reuse_ends  # the cached blocks a reused prefix may end at (None: any)
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.AbstractEventLoop, KVQueue, int | None]] = []
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, KVQueue]] = []
        self.load = EngineLoad()  # running/waiting for readers that ask for load records (server loop)
        self._load = (0, 0)  # the counts last set on the engine thread
        self._load_loop: asyncio.AbstractEventLoop | None = None  # where ``load`` lives

    # --- asyncio side ---------------------------------------------------------------------------
    def subscribe(self, maxsize: int, after: int | None) -> KVQueue:
        """A queue of numbered events ``(seq, event)``: those after ``after`` when all are still kept,
        else first a snapshot. Delivered once the engine thread runs ``attach_pending`` (wake it)."""
        q: KVQueue = asyncio.Queue(maxsize)
        self._load_loop = asyncio.get_running_loop()
        self.load.set(*self._load)
        with self._lock:
            self._pending.append((asyncio.get_running_loop(), q, after))
        return q

    def unsubscribe(self, q: KVQueue) -> None:
        with self._lock:
            self._subscribers = [(lp, s) for lp, s in self._subscribers if s is not q]
            self._pending = [(lp, s, a) for lp, s, a in self._pending if s is not q]

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    # --- engine thread --------------------------------------------------------------------------
    def attach_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._subscribers.extend((lp, q) for lp, q, _ in pending)
        for loop, q, after in pending:
            for item in self.backlog(after):
                loop.call_soon_threadsafe(offer, q, item)

    def backlog(self, after: int | None) -> list[tuple[int, KVEvent]]:
        """What a new subscriber gets first: the events after ``after`` if all are kept, else a snapshot."""
        log = self._log
        if after is not None and after <= self.seq and (after == self.seq or (log and log[0][0] <= after + 1)):
            return [(n, ev) for n, ev in log if n > after]
        return [(self.seq, KVEvent("snapshot", tuple(self._cached_hashes()), ends=self._reuse_ends()))]

    def publish(self, events: list[KVEvent]) -> None:
        if not events:
            return
        for sink in self.sinks:
            sink.offer(events)
        numbered = []
        for ev in events:  # kept and streamed without token ids (a log of 10,000 prompts' tokens is large)
            self.seq += 1
            numbered.append((self.seq, KVEvent(ev.type, ev.block_hashes, ends=ev.ends)))
        self._log.extend(numbered)
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, q in subscribers:
            for item in numbered:
                try:
                    loop.call_soon_threadsafe(offer, q, item)
                except RuntimeError:  # the subscriber's event loop is gone
                    self.unsubscribe(q)

    def set_load(self, running: int, waiting: int) -> None:
        """The engine's request counts after a step; handed to the server loop when they change."""
        if (running, waiting) == self._load:
            return
        self._load = (running, waiting)
        if (loop := self._load_loop) is not None:
            try:
                loop.call_soon_threadsafe(self.load.set, running, waiting)
            except RuntimeError:  # the server's event loop is gone
                self._load_loop = None

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def offer(q: KVQueue, item: tuple[int, KVEvent] | str) -> None:
    try:
        q.put_nowait(item)
    except asyncio.QueueFull:  # a subscriber that cannot keep up loses its stream (it must resync)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)
