"""A call's row in the usage ledger: opened when admitted, advanced while a stream delivers, recorded once.

A meter that blocks (a database write) is called in a worker thread; one that says ``blocking = False``
is called inline. Only admitted calls have a row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from supernode.router.call import Call, usage_record
from supernode.router.contracts import Meter, UsageRecord


async def _write(meter: Meter, write: Callable[[UsageRecord], None], record: UsageRecord) -> None:
    if getattr(meter, "blocking", True):
        await asyncio.to_thread(write, record)
    else:
        write(record)


async def open_row(meter: Meter, call: Call) -> None:
    """Admitted: the ledger gets an open row now (durably), finalised when the request ends."""
    await _write(meter, meter.open, usage_record(call, "open"))


async def advance_row(meter: Meter, call: Call) -> None:
    """The open row learns the tokens delivered so far (what a restart bills if we die now)."""
    await _write(meter, meter.progress, usage_record(call, "open"))


async def record_row(meter: Meter, call: Call, error: BaseException | None) -> None:
    """Durably record usage (before the final bytes), once. Only admitted requests are metered."""
    if call.ticket is None or call.metered:
        return
    call.metered = True
    if isinstance(error, asyncio.CancelledError):
        call.status, call.error = "cancelled", "client disconnected"
    elif error is not None:
        call.status, call.error = "error", str(error)[:500]
    record = usage_record(call)
    if isinstance(error, asyncio.CancelledError) or not getattr(meter, "blocking", True):
        meter.record(record)  # no awaiting inside a cancelled task; or a meter that never blocks
    else:
        await asyncio.to_thread(meter.record, record)
