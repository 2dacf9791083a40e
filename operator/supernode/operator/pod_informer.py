"""Every pod (and every node) in the cluster, slimmed to what planning and group state read, kept current by
one watch each.

Pods are the operator's busiest input: each group's pods are created, scheduled, become ready and get
their leader label, a handful of watch events per group. Through kopf each event costs its full
per-object processing (memory, body views, loggers, cause detection) for what is a dictionary update;
here an event is decoded once and stored. The list of pods handed to a pass is rebuilt only after a
change, and an unchanged pod keeps its dict, so `InventoryCache` parses each pod version once; each
change also updates a `PodIndex` (cluster_index.py), so a pass reads per-node usage instead of every pod.
Nodes come the same way (`NodeInformer`): a pass is handed the same node list until a node changes, and
what is derived from that list is computed once per list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from supernode.operator.cluster_index import PodIndex
from supernode.operator.kube import TRANSPORT_ERRORS, ApiError, KubeClient

log = logging.getLogger("supernode.operator")
_RELIST_ON: tuple[type[BaseException], ...] = (ApiError, ValueError, *TRANSPORT_ERRORS)  # ValueError: a garbled stream


def slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the operator reads from a pod (placement, devices, readiness, failures; uid and deletion
    for rank tables)."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    return {
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "labels", "annotations", "ownerReferences",
                                              "deletionTimestamp")},
        "spec": {"nodeName": spec.get("nodeName"),
                 "containers": [{"name": c.get("name"), "resources": c.get("resources", {})}
                                for c in spec.get("containers") or []],
                 "initContainers": [{"name": c.get("name"), "resources": c.get("resources", {})}
                                    for c in spec.get("initContainers") or []]},
        "status": {k: status.get(k) for k in ("phase", "reason", "conditions", "containerStatuses")},
    }


def slim_node(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields planning and the health checks read from a node."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {"metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
            "spec": dict(body.get("spec") or {}),
            "status": {k: status.get(k) for k in ("allocatable", "capacity", "conditions")}}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Informer:
    """List, then watch from the list's resourceVersion; a stream that ends is resumed, an expired one
    (410) or a failure relists. `synced` is set once the first list is in: plans wait for it."""

    def __init__(self, list_: Callable[[], Awaitable[tuple[list[dict[str, Any]], str]]],
                 watch: Callable[[str, float], AsyncIterator[dict[str, Any]]],
                 slim: Callable[[Mapping[str, Any]], dict[str, Any]], *, what: str, watch_timeout: float = 300.0,
                 retry_seconds: float = 1.0) -> None:
        self._list, self._watch, self._slim, self.what = list_, watch, slim, what
        self.watch_timeout, self.retry_seconds = watch_timeout, retry_seconds
        self.synced = asyncio.Event()
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._snapshot: list[dict[str, Any]] | None = None
        # Called with each watched change (type, slim object) after it is stored; must not block.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def items(self) -> list[dict[str, Any]]:
        """The current objects (the same list object until one changes; read-only)."""
        if self._snapshot is None:
            self._snapshot = list(self._items.values())
        return self._snapshot

    def _relist(self, items: list[dict[str, Any]]) -> None:
        self._items = {_key(p): self._slim(p) for p in items}
        self._snapshot = None
        self.synced.set()

    def _apply(self, type_: str, obj: Mapping[str, Any]) -> None:
        item = self._slim(obj)
        if type_ == "DELETED":
            self._items.pop(_key(obj), None)
        else:
            self._items[_key(obj)] = item
        self._snapshot = None
        for listener in self.listeners:
            listener(type_, item)

    async def run(self) -> None:
        """Until cancelled."""
        version = ""
        while True:
            try:
                if not version:
                    items, version = await self._list()
                    self._relist(items)
                async for event in self._watch(version, self.watch_timeout):
                    type_, obj = event.get("type"), event.get("object") or {}
                    if type_ == "ERROR":  # 410 Gone: our resourceVersion is too old; anything else: relist too
                        log.info("%s watch: %s; relisting", self.what, obj.get("message") or obj)
                        version = ""
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if type_ in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(type_, obj)
            except _RELIST_ON as e:
                log.warning("%s watch: %s; relisting in %.0fs", self.what, e, self.retry_seconds)
                version = ""
                await asyncio.sleep(self.retry_seconds)


class PodInformer(Informer):
    """Every pod, and a `PodIndex` over them kept current with each change."""

    def __init__(self, client: KubeClient, *, watch_timeout: float = 300.0, retry_seconds: float = 1.0) -> None:
        super().__init__(client.list_pods, client.watch_pods, slim_pod, what="pod", watch_timeout=watch_timeout,
                         retry_seconds=retry_seconds)
        self.index = PodIndex()  # exactly the pods of `pods()`

    def pods(self) -> list[dict[str, Any]]:
        return self.items()

    def _relist(self, items: list[dict[str, Any]]) -> None:
        super()._relist(items)
        self.index.reset(self._items.items())

    def _apply(self, type_: str, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        if type_ == "DELETED":
            self.index.remove(key)
        super()._apply(type_, obj)
        if type_ != "DELETED" and (pod := self._items.get(key)) is not None:
            self.index.put(key, pod)


class NodeInformer(Informer):
    """Every node (`nodes()`: the same list until one changes)."""

    def __init__(self, client: KubeClient, *, watch_timeout: float = 300.0, retry_seconds: float = 1.0) -> None:
        super().__init__(client.list_nodes, client.watch_nodes, slim_node, what="node", watch_timeout=watch_timeout,
                         retry_seconds=retry_seconds)

    def nodes(self) -> list[dict[str, Any]]:
        return self.items()
