"""Run the real kopf operator in-process against the test Kubernetes API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf

from supernode.operator.handlers import OperatorConfig, build_registry


@contextlib.asynccontextmanager
async def running_operator(url: str, *, resync: float = 0.2, **config: Any) -> AsyncIterator[None]:
    registry = build_registry(OperatorConfig(server=url, resync_seconds=resync, fast=True, **config))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                             stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (KeyError, IndexError, TypeError, StopIteration):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
