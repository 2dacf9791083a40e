"""Every pod in the cluster, slimmed to what planning and group state read, kept current by one watch.

Pods are the operator's busiest input: each group's pods are created, scheduled, become ready and get
their leader label, a handful of watch events per group. Through kopf each event costs its full
per-object processing (memory, body views, loggers, cause detection) for what is a dictionary update;
here an event is decoded once and stored. The list of pods handed to a pass is rebuilt only after a
change, and an unchanged pod keeps its dict, so `InventoryCache` parses each pod version once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

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


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class PodInformer:
    """List, then watch from the list's resourceVersion; a stream that ends is resumed, an expired one
    (410) or a failure relists. `synced` is set once the first list is in: plans wait for it."""

    def __init__(self, client: KubeClient, *, watch_timeout: float = 300.0, retry_seconds: float = 1.0) -> None:
        self.client = client
        self.watch_timeout, self.retry_seconds = watch_timeout, retry_seconds
        self.synced = asyncio.Event()
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._snapshot: list[dict[str, Any]] | None = None
        # Called with each watched change (type, slim pod) after it is stored; must not block.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def pods(self) -> list[dict[str, Any]]:
        """The current pods (the same list object until one changes; read-only)."""
        if self._snapshot is None:
            self._snapshot = list(self._pods.values())
        return self._snapshot

    def _relist(self, items: list[dict[str, Any]]) -> None:
        self._pods = {_key(p): slim_pod(p) for p in items}
        self._snapshot = None
        self.synced.set()

    def _apply(self, type_: str, obj: Mapping[str, Any]) -> None:
        pod = slim_pod(obj)
        if type_ == "DELETED":
            self._pods.pop(_key(obj), None)
        else:
            self._pods[_key(obj)] = pod
        self._snapshot = None
        for listener in self.listeners:
            listener(type_, pod)

    async def run(self) -> None:
        """Until cancelled."""
        version = ""
        while True:
            try:
                if not version:
                    items, version = await self.client.list_pods()
                    self._relist(items)
                async for event in self.client.watch_pods(version, self.watch_timeout):
                    type_, obj = event.get("type"), event.get("object") or {}
                    if type_ == "ERROR":  # 410 Gone: our resourceVersion is too old; anything else: relist too
                        log.info("pod watch: %s; relisting", obj.get("message") or obj)
                        version = ""
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if type_ in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(type_, obj)
            except _RELIST_ON as e:
                log.warning("pod watch: %s; relisting in %.0fs", e, self.retry_seconds)
                version = ""
                await asyncio.sleep(self.retry_seconds)
