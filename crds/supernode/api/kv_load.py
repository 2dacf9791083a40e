"""An engine's request counts on its `/v1/kv_events` stream (asked for with ``?load=1``).

Every router replica follows every engine's KV event stream; with load records on the same stream a
replica sees the requests the other replicas sent to an engine within milliseconds instead of at its next
metrics scrape. A load record is ``{"type": "load", "instance": ..., "running": R, "waiting": W}``: not
numbered (it is state, not a change to the cache; it may come before or after the snapshot), sent as
the stream opens and then whenever the counts change, at most every ``interval_s`` per reader (the
last change is never lost, only merged). A reader's wait for its next queue item ends when an owed
record is due; a zero timeout never returns an item, so the record goes out on that timeout.

Only readers that ask get load records: a router that predates them rejects unknown record types.
``EngineLoad`` lives on the server's event loop; a reader's queue receives ``LOAD_CHANGED`` (at most one
waiting at a time) when the counts change, and its ``LoadReader`` says when a record is due.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

LOAD_CHANGED: Final = "load-changed"  # queue marker: the engine's counts changed since the reader last looked
DEFAULT_INTERVAL_S = 0.025  # at most one load record per reader this often


class EngineLoad:
    """The engine's running and waiting request counts, and the readers to tell when they change."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self._readers: dict[asyncio.Queue[Any], bool] = {}  # queue → a LOAD_CHANGED is waiting in it

    def set(self, running: int, waiting: int) -> None:
        if (running, waiting) == (self.running, self.waiting):
            return
        self.running, self.waiting = running, waiting
        for q, marked in self._readers.items():
            if not marked:
                try:
                    q.put_nowait(LOAD_CHANGED)
                except asyncio.QueueFull:  # the reader is behind on events: it resyncs, load included
                    continue
                self._readers[q] = True

    def reader(self, q: asyncio.Queue[Any], interval_s: float = DEFAULT_INTERVAL_S) -> LoadReader:
        self._readers[q] = False
        return LoadReader(self, q, interval_s)

    def drop(self, q: asyncio.Queue[Any]) -> None:
        self._readers.pop(q, None)

    def seen(self, q: asyncio.Queue[Any]) -> None:
        if q in self._readers:
            self._readers[q] = False


class LoadReader:
    """One reader's coalescing: a record is owed after a change and sent no sooner than ``interval_s``
    after the previous one. The stream's loop calls ``changed`` on LOAD_CHANGED, ``take`` after every
    item and ``timeout`` for how long to wait for the next one."""

    def __init__(self, load: EngineLoad, q: asyncio.Queue[Any], interval_s: float):
        if not interval_s >= 0:
            raise ValueError(f"load interval: must be >= 0 seconds, got {interval_s}")
        self.load, self.q, self.interval_s = load, q, interval_s
        self.owed = True  # the first record goes out at once
        self.next_at = 0.0

    def changed(self) -> None:
        self.load.seen(self.q)
        self.owed = True

    def timeout(self, idle_s: float) -> float:
        """How long to wait for the next queue item: until an owed record is due, else ``idle_s``."""
        if not self.owed:
            return idle_s
        return max(0.0, min(idle_s, self.next_at - asyncio.get_running_loop().time()))

    def take(self, instance: str) -> dict[str, Any] | None:
        """The load record to send now, if one is owed and due."""
        now = asyncio.get_running_loop().time()
        if not self.owed or now < self.next_at:
            return None
        self.owed, self.next_at = False, now + self.interval_s
        return {"type": "load", "instance": instance, "running": self.load.running, "waiting": self.load.waiting}

    def close(self) -> None:
        self.load.drop(self.q)


def wants_load(value: str | None) -> bool:
    """The ``load`` query parameter: "1"/"true" asks for load records; absent or "0"/"false" does not."""
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ValueError(f"load: must be 1 or 0, got {value!r}")


def parse_load(record: dict[str, Any]) -> int:
    """A load record's total requests on the engine (running + waiting); ValueError naming the field."""
    total = 0
    for name in ("running", "waiting"):
        v = record.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name}: must be a non-negative integer")
        total += v
    return total
