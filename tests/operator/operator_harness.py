"""Run the real kopf operator in-process against the test Kubernetes API."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf

from supernode.operator.handlers import OperatorConfig, build_registry


@contextlib.asynccontextmanager
async def running_operator(url: str, *, resync: float = 0.2, namespaces: tuple[str, ...] = (),
                           **config: Any) -> AsyncIterator[None]:
    """The operator in its own thread and event loop, as it would be in its own process: kopf's shutdown
    (which reaps every task of its loop) never touches the test API's request handlers. `namespaces`: watch
    only these (`--namespace`), else all (`-A`)."""
    registry = build_registry(OperatorConfig(server=url, resync_seconds=resync, fast=True, **config))
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(kopf.operator(registry=registry, clusterwide=not namespaces,
                                      namespaces=list(namespaces), standalone=True,
                                      stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="operator", daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), f"operator did not start: {errors}"
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive(), "operator did not stop"
        assert not errors, errors


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
