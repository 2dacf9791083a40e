"""List-then-watch for one resource, kept in a ResourceCache (client-go's reflector, in small).

LIST gives a snapshot and its resourceVersion; WATCH resumes from it (bookmarks on) and each event
updates the cache. A stream the server ends (timeoutSeconds) is resumed from the last version seen;
410 Gone relists at once; any other failure relists after an exponential back-off; every
`resync_s` a full LIST replaces the cache anyway, as a safety net against missed events.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from supernode.router.discovery.kube_cache import Expired, ResourceCache
from supernode.router.discovery.kube_client import KubeClient, KubeResource
from supernode.router.metrics import RouterMetrics

log = logging.getLogger("supernode.router.discovery")


@dataclass
class Backoff:
    first_s: float = 0.2
    max_s: float = 10.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.max_s, self.first_s * 2 ** self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)  # jitter: many routers must not relist in lockstep

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class InformerStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    expired: int = 0
    errors: int = 0


class Informer:
    def __init__(self, client: KubeClient, resource: KubeResource, namespace: str | None,
                 on_change: Callable[[], None], *, watch_timeout_s: float = 290.0, resync_s: float = 300.0,
                 backoff: Backoff | None = None, metrics: RouterMetrics | None = None):
        self.client, self.resource, self.namespace = client, resource, namespace
        self.on_change = on_change
        self.watch_timeout_s, self.resync_s = watch_timeout_s, resync_s
        self.backoff = backoff or Backoff()
        self.cache = ResourceCache()
        self.stats = InformerStats()
        self.last_error: str | None = None
        self.metrics = metrics
        self._list_reason = "initial"

    async def relist(self) -> None:
        items, rv = await self.client.list(self.resource, self.namespace)
        self.stats.lists += 1
        if self.metrics is not None:
            self.metrics.discovery_lists.labels(self.resource.plural, self._list_reason).inc()
        if self.cache.replace(items, rv):
            self.on_change()
        log.info("discovery: listed %d %s (resourceVersion %s)", len(items), self.resource, rv)

    async def watch_until(self, deadline: float) -> None:
        """Watch, resuming after each server-side timeout, until `deadline` (monotonic)."""
        while (left := deadline - time.monotonic()) > 0:
            self.stats.watches += 1
            started, seen = time.monotonic(), self.stats.events
            async for event in self.client.watch(self.resource, self.namespace, self.cache.resource_version,
                                                 min(self.watch_timeout_s, left)):
                self.stats.events += 1
                if self.metrics is not None:
                    self.metrics.discovery_events.labels(self.resource.plural, str(event.get("type"))).inc()
                if self.cache.apply(event):
                    self.on_change()
                self.backoff.reset()
            if self.stats.events == seen and time.monotonic() - started < min(1.0, self.watch_timeout_s / 2):
                await asyncio.sleep(self.backoff.next())  # streams that end at once, empty: do not spin

    async def run(self) -> None:
        while True:
            try:
                await self.relist()
                self.last_error = None
                self.backoff.reset()
                await self.watch_until(time.monotonic() + self.resync_s)
                self._list_reason = "resync"
            except Expired as e:
                self.stats.expired += 1
                self._list_reason = "expired"
                log.info("discovery: %s watch expired (%s); relisting", self.resource, e)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # API down, RBAC, dropped stream: keep the cache, relist after a pause
                self.stats.errors += 1
                self._list_reason = "error"
                if self.metrics is not None:
                    self.metrics.discovery_errors.labels(self.resource.plural).inc()
                self.last_error = f"{type(e).__name__}: {e}"
                delay = self.backoff.next()
                log.warning("discovery: %s failed (%s); keeping the last objects, relisting in %.1fs",
                            self.resource, self.last_error, delay)
                await asyncio.sleep(delay)
