"""Draining groups are deleted once idle, with or without the autoscaler.

A draining group (scale-down, rollout, or a `PreSeparateNPU` device fault) gets no new requests: its
leader pod carries `supernode.io/draining`, which router discovery reads. The only place that knows
whether its in-flight requests have finished is the routers: each replica's `/autoscaling/signals` lists
the draining endpoints with their open requests and, when scraped, the engine's running and waiting
counts (`demand.idle_draining_by_pool`; group indexes restart in each pool of spec.pools). This watch
asks them every `interval_seconds`, but only while some leader pod is draining (the pod informer says so
without an API call), and marks a group that every router reports idle `supernode.io/drained`; the
reconcile pass it triggers deletes it and its slot's replacement takes over. When the routers cannot be
asked (none found, one not answering), nothing is marked and `rollout.drainTimeoutSeconds` bounds the
wait, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from supernode.api import constants as C
from supernode.operator import demand
from supernode.operator import naming as N
from supernode.operator.kube import LWS, STATEFULSETS, KubeClient
from supernode.operator.router_poll import RouterPoll

log = logging.getLogger("supernode.operator.drain")


@dataclass(frozen=True, slots=True)
class DrainWatchConfig:
    router_namespace: str = "supernode-system"  # where the router Service lives
    router_service: str = "supernode-router-metrics"  # any Service selecting the router pods
    router_ops_port: int = 9090  # the router pods' ops port: /autoscaling/signals
    interval_seconds: float = 5.0  # between asks, while a group drains
    timeout_seconds: float = 2.0
    router_urls: tuple[str, ...] = ()  # fixed signal URLs instead of Service discovery

    def __post_init__(self) -> None:
        if not self.interval_seconds > 0:
            raise ValueError(f"drain watch interval must be > 0 seconds, got {self.interval_seconds}")


def draining(pods: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, deployment label) of every deployment with a draining leader pod not yet marked drained."""
    out: set[tuple[str, str]] = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        notes, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        if notes.get(C.ANNOTATION_DRAINING) == "true" and notes.get(C.ANNOTATION_DRAINED) != "true" and labels.get(
                C.LABEL_DEPLOYMENT):
            out.add((str(meta.get("namespace") or ""), str(labels[C.LABEL_DEPLOYMENT])))
    return out


async def mark_drained(client: KubeClient, body: Mapping[str, Any], idle: set[int], lws: bool, pool: str = "") -> int:
    """Draining groups of `body`'s pool `pool` ("" without spec.pools) whose index is in `idle` get
    `supernode.io/drained` (the reconciler then deletes them instead of waiting out
    rollout.drainTimeoutSeconds). Returns how many were marked."""
    if not idle:
        return 0
    meta = body["metadata"]
    res, ns = (LWS if lws else STATEFULSETS), meta.get("namespace") or ""
    selector = N.selector_string({C.LABEL_DEPLOYMENT: N.label_value(meta["name"]),
                                  **({C.LABEL_POOL: pool} if pool else {})})
    marked = 0
    for w in await client.list_children(res, ns, selector):
        wmeta = w["metadata"]
        notes, labels = wmeta.get("annotations") or {}, wmeta.get("labels") or {}
        group = str(labels.get(C.LABEL_GROUP, ""))
        if notes.get(C.ANNOTATION_DRAINING) != "true" or notes.get(C.ANNOTATION_DRAINED) == "true" or \
                not group.isdigit() or int(group) not in idle or N.pool_of(w) != pool:
            continue
        await client.patch(res, ns, wmeta["name"], {"metadata": {"annotations": {C.ANNOTATION_DRAINED: "true"}}})
        await client.post_event(dict(body), "Normal", "GroupDrained",
                                f"group {group} ({wmeta['name']}): no request in flight on any router")
        marked += 1
    return marked


class DrainWatch:
    def __init__(self, client: KubeClient, config: DrainWatchConfig, lws: Callable[[], Awaitable[bool]]) -> None:
        self.client, self.config, self.lws = client, config, lws
        self.routers = RouterPoll(client, config)
        self._last_error = ""

    async def close(self) -> None:
        await self.routers.close()

    async def tick(self, bodies: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
                   ) -> list[Mapping[str, Any]]:
        """One ask of the routers if anything drains; returns the deployments with a group marked drained."""
        wanted = draining(pods)
        if not wanted:
            return []
        answers, error = await self.routers.routers()
        if error:
            if error != self._last_error:  # once per distinct problem: the drain timeout still applies
                log.warning("drain watch: %s; draining groups wait for rollout.drainTimeoutSeconds", error)
            self._last_error = error
            return []
        self._last_error = ""
        lws = await self.lws()
        out = []
        for body in bodies:
            meta = body["metadata"]
            ns = meta.get("namespace") or ""
            if meta.get("deletionTimestamp") or (ns, N.label_value(meta["name"])) not in wanted:
                continue
            marked = 0
            for pool, idle in demand.idle_draining_by_pool(f"{ns}/{meta['name']}", answers).items():
                marked += await mark_drained(self.client, body, idle, lws, pool)
            if marked:
                out.append(body)
        return out


def register(registry: kopf.OperatorRegistry, config: DrainWatchConfig,
             reconcile_one: Callable[[Mapping[str, Any], kopf.Memo, Mapping[str, Any]], Awaitable[None]],
             retryable: tuple[type[BaseException], ...]) -> None:
    """The watch as one operator-wide loop (leader only, like the resync); a deployment with a group just
    marked drained is reconciled at once, so the group goes within one interval of going idle."""

    async def loop(memo: kopf.Memo, indices: Mapping[str, Any]) -> None:
        watch: DrainWatch = memo.drain_watch
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(memo.stopping.wait(), config.interval_seconds)
            if memo.stopping.is_set():
                return
            bodies = [b for store in indices["mds_idx"].values() for b in store]
            try:
                marked = await watch.tick(bodies, memo.pods.pods())
            except retryable as e:  # the next interval asks again
                log.warning("drain watch: %s", e)
                continue
            for body in marked:
                try:
                    await reconcile_one(body, memo, indices)
                except retryable as e:  # the resync deletes it
                    log.warning("drained group of %s/%s: %s", body["metadata"].get("namespace"),
                                body["metadata"]["name"], e)

    @kopf.on.startup(registry=registry)
    async def start(memo: kopf.Memo, **indices: Any) -> None:
        memo.drain_watch = DrainWatch(memo.reconciler.client, config, memo.reconciler.lws_installed)
        memo.drain_loop = asyncio.create_task(loop(memo, indices), name="supernode-drain-watch")

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        task = getattr(memo, "drain_loop", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        watch: DrainWatch | None = getattr(memo, "drain_watch", None)
        if watch is not None:
            await watch.close()
