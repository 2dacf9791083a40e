"""Device health: the Ascend device-info ConfigMaps (one watch on their namespace, device_info_watch.py) and
the Nodes' fault signals (a kopf handler).

A change that matters reconciles at once every ModelDeployment with a pod on that node, so a device fault
reaches the routers (the fenced leader) within one event instead of at the next resync; after a repair,
that deployment's pod events reconcile it too for a while, so the replacement is labelled and reported
ready as soon as its pods are. A report that
does not parse, or whose CheckCode is wrong, is ignored with one Warning Event on the ConfigMap and one
log line (again only after a good report came in between).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf

from supernode.api import constants as C
from supernode.operator import naming as N
from supernode.operator.device_info_watch import DeviceInfoWatch
from supernode.operator.faults import node_signals, pod_signals
from supernode.operator.health_book import HealthBook
from supernode.operator.metrics import OperatorMetrics

log = logging.getLogger("supernode.operator.health")
ReconcileOne = Callable[[Mapping[str, Any], kopf.Memo, Mapping[str, Any]], Awaitable[None]]


def _values(index: Mapping[Any, Iterable[Any]]) -> list[Any]:
    return [value for store in index.values() for value in store]


def deployments_on(node: str, pods: Iterable[Mapping[str, Any]], mds: Iterable[Mapping[str, Any]]) -> list[Any]:
    """ModelDeployments with a pod on `node` (by the deployment label their pods carry)."""
    wanted = {((p.get("metadata") or {}).get("namespace") or "",
               ((p.get("metadata") or {}).get("labels") or {}).get(C.LABEL_DEPLOYMENT))
              for p in pods if (p.get("spec") or {}).get("nodeName") == node}
    return [md for md in mds if not md["metadata"].get("deletionTimestamp") and (
        md["metadata"].get("namespace") or "", N.label_value(md["metadata"]["name"])) in wanted]


def node_fault_key(node: Mapping[str, Any], book: HealthBook) -> tuple[Any, ...]:
    """What of a Node the fault mapping reads; a heartbeat that changes nothing here triggers nothing."""
    status = node.get("status") or {}
    signals = node_signals(node, conditions=book.conditions, held={})
    taints = tuple(sorted(str(t.get("key")) for t in (node.get("spec") or {}).get("taints") or []
                          if t.get("effect") == "NoExecute"))
    gpus = ((status.get("allocatable") or {}).get(C.RESOURCE_NVIDIA), (status.get("capacity") or {}).get(
        C.RESOURCE_NVIDIA))
    return (tuple(f.level for f in signals), taints, gpus)


def register(registry: kopf.OperatorRegistry, reconcile_one: ReconcileOne, retryable: tuple[type[BaseException], ...],
             *, react: bool = True, device_info_namespace: str | None = C.ASCEND_DEVICE_INFO_NAMESPACE,
             watch_timeout: float = 300.0, retry_seconds: float = 1.0) -> None:
    """`react`: reconcile the deployments on a node at once when its faults change (else the resync finds them).
    `device_info_namespace`: where to watch the Ascend device plugin's reports (None: not at all)."""

    async def repair_node(node: str, memo: kopf.Memo, indices: Mapping[str, Any]) -> None:
        if memo.stopping.is_set() or not react:
            return
        for body in deployments_on(node, memo.pods.pods(), _values(indices["mds_idx"])):
            try:
                await reconcile_one(body, memo, indices)
            except retryable as e:  # the resync tries again
                log.warning("device fault on %s: reconcile of %s/%s: %s", node, body["metadata"].get("namespace"),
                            body["metadata"]["name"], e)

    async def device_info(type_: str, cm: Mapping[str, Any], memo: kopf.Memo, indices: Mapping[str, Any]) -> None:
        """One report event from the device-info watch (device_info_watch.py)."""
        book: HealthBook = memo.reconciler.health
        metrics: OperatorMetrics = memo.metrics
        meta = cm.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        if type_ == "DELETED":
            node = book.remove(name)
            if node is not None:
                await repair_node(node, memo, indices)
            return
        recorded = book.record(cm)
        for fault in recorded.new:
            metrics.device_faults.labels(fault.level).inc()
            log.warning("device fault: %s", fault.describe())
        if recorded.kind:
            metrics.device_info_rejected.labels(recorded.kind).inc()
        if recorded.problem:
            log.warning("device info %s/%s ignored: %s", namespace, name, recorded.problem)
            try:
                await memo.reconciler.client.post_event(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                        "name": name, "namespace": namespace, "uid": meta.get("uid")}},
                    "Warning", "DeviceInfoIgnored", recorded.problem)
            except retryable as e:
                log.warning("event for %s: %s", name, e)
        if recorded.changed:
            await repair_node(recorded.node, memo, indices)

    @kopf.on.startup(registry=registry)
    async def start(memo: kopf.Memo, **indices: Any) -> None:
        memo.node_faults = {}  # node -> what its fault signals were (per-object memos share this dict)
        following: dict[tuple[str, str], asyncio.Task[None]] = {}
        dirty: set[tuple[str, str]] = set()

        async def follow(key: tuple[str, str]) -> None:
            """Reconcile the repaired deployment until no pod of it changed during the last pass."""
            while key in dirty and not memo.stopping.is_set():
                dirty.discard(key)
                for md in _values(indices["mds_idx"]):
                    meta = md["metadata"]
                    mine = (meta.get("namespace") or "", N.label_value(meta["name"])) == key
                    if not mine or meta.get("deletionTimestamp"):
                        continue
                    try:
                        await reconcile_one(md, memo, indices)
                    except retryable as e:  # the resync tries again
                        log.warning("after a device-fault repair: reconcile of %s/%s: %s", key[0], meta["name"], e)

        def repaired_pod(type_: str, pod: Mapping[str, Any]) -> None:
            """A pod of a deployment whose group was just repaired changed (the pod informer's watch): reconcile
            it now, so the rebuilt group's leader label and status follow its pods at once, not at the resync."""
            meta = pod.get("metadata") or {}
            label = (meta.get("labels") or {}).get(C.LABEL_DEPLOYMENT)
            key = (str(meta.get("namespace") or ""), str(label or ""))
            if not label or not react or memo.stopping.is_set():
                return
            if not memo.reconciler.health.recovering(key, time.time()) and not pod_signals(pod):
                return  # (a pod whose status reports an unhealthy device is acted on at once too)
            dirty.add(key)
            if key not in following or following[key].done():
                following[key] = asyncio.get_running_loop().create_task(follow(key), name=f"supernode-repaired-{key}")

        memo.pods.listeners.append(repaired_pod)
        if device_info_namespace:
            async def handle(type_: str, cm: Mapping[str, Any]) -> None:
                if memo.stopping.is_set():
                    return
                try:
                    await device_info(type_, cm, memo, indices)
                except Exception:  # the watch goes on; the resync acts on what was recorded
                    log.exception("device info %s: handling a %s event failed",
                                  (cm.get("metadata") or {}).get("name"), type_)

            watch = DeviceInfoWatch(memo.reconciler.client, device_info_namespace, handle,
                                    watch_timeout=watch_timeout, retry_seconds=retry_seconds)
            memo.device_info_watch = asyncio.create_task(watch.run(), name="supernode-device-info")

    @kopf.on.event("nodes", registry=registry)
    async def node_health(event: Mapping[str, Any], name: str, body: kopf.Body, memo: kopf.Memo,
                          **kwargs: Any) -> None:
        seen: dict[str, tuple[Any, ...]] = memo.node_faults
        if event.get("type") == "DELETED":
            seen.pop(name, None)
            return
        key = node_fault_key(body, memo.reconciler.health)
        before = seen.get(name)
        seen[name] = key
        if before is not None and before != key:
            await repair_node(name, memo, kwargs)
