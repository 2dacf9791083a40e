"""A router replica's ops endpoint for operator tests: `/autoscaling/signals` on 127.0.0.1 with what the test
sets, found by the operator through the chart's router ops Service and a ready router pod."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from k8s_emulator import K8sEmulator

from supernode.api import constants as C

ROUTER_NS = "supernode-system"


@contextlib.asynccontextmanager
async def serve_get(handler: Any, path: str) -> AsyncIterator[int]:
    """One GET route served on 127.0.0.1 for the block's duration; yields the port."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


class FakeRouter:
    """Serves /autoscaling/signals (a router's ops port) with whatever the test sets per model (queued, inFlight)."""

    def __init__(self) -> None:
        self.demand: dict[str, tuple[int, int]] = {}
        self.draining: list[dict[str, Any]] = []  # draining endpoints as a router reports them
        self.fail = False
        self.port = 0

    async def signals(self, _: web.Request) -> web.Response:
        if self.fail:
            return web.json_response({"error": "down"}, status=500)
        pools = [{"model": m, "mode": "non-think", "queued": q, "queuedTokens": q * 100, "oldestWaitSeconds": 0.5,
                  "inFlight": f, "admittedTotal": 0, "spilledTotal": 0, "noCapacityTotal": 0}
                 for m, (q, f) in self.demand.items()]
        return web.json_response({"time": 0, "pools": pools, "models": [], "draining": self.draining})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeRouter]:
        async with serve_get(self.signals, "/autoscaling/signals") as self.port:
            yield self


async def router_service(emu: K8sEmulator) -> None:
    """The chart's router ops Service (`<router>-metrics`): it selects the router pods."""
    labels = {C.LABEL_COMPONENT: "router"}
    await emu.put_object({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "supernode-router-metrics", "namespace": ROUTER_NS},
        "spec": {"selector": labels, "ports": [{"name": "metrics", "port": 9090}]}})
    await emu.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "router-0", "namespace": ROUTER_NS, "labels": labels}, "spec": {"containers": [{"name": "router"}]}})
    await emu.patch_object("pods", ROUTER_NS, "router-0", {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status")


