"""Admission and metering when those sections are off: every caller is ANONYMOUS and each request is
admitted to the first candidate pool that has any endpoint (no limits, no queue); usage goes to the
structured log only. With `admission:` / `metering:` configured, the app builds the real ones
(supernode.router.admission / supernode.router.metering) instead."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from supernode.router.contracts import (
    ANONYMOUS,
    PoolCapacity,
    PoolKey,
    RequestContext,
    Tenant,
    Ticket,
    Usage,
    UsageRecord,
)
from supernode.router.errors import NoCapacity

log = logging.getLogger("supernode.router.usage")


@dataclass
class OpenTicket:
    pool: PoolKey
    queued_seconds: float = 0.0
    max_tokens: int = 1

    def release(self, usage: Usage) -> None:
        return None


class OpenGatekeeper:
    def __init__(self, capacity: PoolCapacity):
        self.capacity = capacity

    def authenticate(self, api_key: str | None) -> Tenant:
        return ANONYMOUS

    async def admit(self, ctx: RequestContext, pools: Sequence[PoolKey]) -> Ticket:
        for pool in pools:
            if self.capacity.capacity(pool) > 0:
                return OpenTicket(pool, max_tokens=max(1, ctx.max_tokens))
        first = pools[0]
        raise NoCapacity(f"no ready endpoint serves model {first.model!r} in mode {first.mode.value}",
                         retry_after=1.0)

    def queue_length(self) -> int:
        return 0


class LogMeter:
    """Usage as one structured log line per request (not durable: configure `metering:` for a ledger)."""

    blocking = False  # called on the event loop, not in a worker thread

    def open(self, record: UsageRecord) -> None:
        return None  # nothing durable to finalise: the log line is written at the end

    def progress(self, record: UsageRecord) -> None:
        return None

    def record(self, record: UsageRecord) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        data = asdict(record)
        data["mode"], data["served_mode"] = record.mode.value, record.served_mode.value
        log.info(json.dumps({"event": "usage", **data}, default=str))

    def close(self) -> None:
        return None
