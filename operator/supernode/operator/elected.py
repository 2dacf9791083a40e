"""Run the kopf operator only while this replica holds the leader Lease.

Standby: serve /healthz (so a standby is live and Ready, and a Deployment rollout can proceed) and
try to acquire every retry period. Leader: run kopf (standalone; the Lease replaces kopf's peering)
and renew. Lease lost: stop kopf and exit 1, so the pod restarts as a fresh standby (no state from
the old term survives). SIGTERM: stop kopf, release the Lease, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from supernode.operator.leader import LeaderElector

log = logging.getLogger("supernode.operator.leader")

Operate = Callable[[asyncio.Event], Coroutine[Any, Any, None]]  # runs the operator until the event is set
EXIT_LOST = 1


@contextlib.asynccontextmanager
async def health_server(url: str | None, elector: LeaderElector) -> AsyncIterator[None]:
    """`/healthz` on the liveness URL's host and port (None: no server)."""
    if not url:
        yield
        return
    parts = urlsplit(url)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "role": "leader" if elector.is_leader else "standby",
                                  "identity": elector.config.identity})

    app = web.Application()
    app.router.add_get(parts.path or "/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port or 8080).start()
    try:
        yield
    finally:
        await runner.cleanup()


def lost_grace(elector: LeaderElector) -> float:
    """How long a leader that lost the Lease may take to stop reconciling: a standby may acquire
    `lease_duration` after the last renewal; the leader notices within `renew_deadline + retry_period`."""
    cfg = elector.config
    return max(0.2, cfg.lease_duration - cfg.renew_deadline - 2 * cfg.retry_period)


async def run_elected(elector: LeaderElector, operate: Operate, *, liveness: str | None = None,
                      stop_timeout: float = 20.0) -> int:
    """The process's main coroutine in leader-election mode; returns the exit code. On EXIT_LOST the
    caller should exit at once (the operator was given only `lost_grace` to stop)."""
    stop = asyncio.Event()  # SIGTERM/SIGINT
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
            loop.add_signal_handler(sig, stop.set)
    try:
        async with health_server(liveness, elector):
            if not await elector.acquire(stop):
                return 0
            kopf_stop = asyncio.Event()
            work = asyncio.create_task(operate(kopf_stop), name="operator")
            holding = asyncio.create_task(elector.hold(stop), name="lease-renewal")
            done, _ = await asyncio.wait({work, holding}, return_when=asyncio.FIRST_COMPLETED)
            lost = holding in done and not holding.result()
            kopf_stop.set()
            stop.set()
            await _finish(holding, stop_timeout)
            await _finish(work, lost_grace(elector) if lost else stop_timeout)
            if lost:
                return EXIT_LOST
            await elector.release()
            if work.done() and not work.cancelled() and work.exception() is not None:
                log.error("operator failed: %r", work.exception())
                return EXIT_LOST
            return 0
    finally:
        await elector.client.close()


async def _finish(task: asyncio.Task[Any], timeout: float) -> None:
    """Wait for a task to end, cancelling it after `timeout`; never raises, never hangs (bounded)."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("%s did not stop within %.1fs; cancelling", task.get_name(), timeout)
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
