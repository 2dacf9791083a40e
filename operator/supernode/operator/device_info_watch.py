"""The Ascend device plugin's per-node ConfigMaps, through one watch on their namespace only.

The reports live in `kube-system` (`mindx-dl-deviceinfo-<node>`), whatever namespaces the operator
watches for ModelDeployments. A watch of that one namespace needs only a Role there (`list`, `watch` on
ConfigMaps), never a cluster-wide ConfigMap watch, and it works the same with `-A` and `--namespace`.
ConfigMaps of that namespace that are not device-info reports are dropped on arrival (the plugin puts no
label on its reports to select by). After a relist, reports that disappeared meanwhile are handed on as
deletions, so a node whose plugin was removed while the stream was down loses its faults.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from supernode.api import constants as C
from supernode.operator.kube import TRANSPORT_ERRORS, ApiError, KubeClient

log = logging.getLogger("supernode.operator.health")
_RELIST_ON: tuple[type[BaseException], ...] = (ApiError, ValueError, *TRANSPORT_ERRORS)  # ValueError: a garbled stream
Handle = Callable[[str, Mapping[str, Any]], Awaitable[None]]  # (ADDED | MODIFIED | DELETED, ConfigMap)


class DeviceInfoWatch:
    """List, then watch from the list's resourceVersion; an ended stream is resumed, an expired one (410)
    or a failure relists after `retry_seconds`. `handle` runs once per report event, in order; it must
    not raise (a failure to act is its own to log)."""

    def __init__(self, client: KubeClient, namespace: str, handle: Handle, *, watch_timeout: float = 300.0,
                 retry_seconds: float = 1.0) -> None:
        self.client, self.namespace, self.handle = client, namespace, handle
        self.watch_timeout, self.retry_seconds = watch_timeout, retry_seconds
        self.synced = asyncio.Event()  # the first list is in
        self._known: set[str] = set()

    def _mine(self, cm: Mapping[str, Any]) -> bool:
        meta = cm.get("metadata") or {}
        return (meta.get("namespace") or self.namespace) == self.namespace and str(meta.get("name") or "").startswith(
            C.ASCEND_DEVICE_INFO_PREFIX)

    async def _relist(self) -> str:
        items, version = await self.client.list_configmaps(self.namespace)
        reports = {str(cm["metadata"]["name"]): cm for cm in items if self._mine(cm)}
        for gone in sorted(self._known - reports.keys()):
            await self.handle("DELETED", {"metadata": {"name": gone, "namespace": self.namespace}})
        for cm in reports.values():
            await self.handle("ADDED", cm)
        self._known = set(reports)
        self.synced.set()
        return version

    async def run(self) -> None:
        """Until cancelled."""
        version = ""
        while True:
            try:
                if not version:
                    version = await self._relist()
                async for event in self.client.watch_configmaps(self.namespace, version, self.watch_timeout):
                    type_, obj = event.get("type"), event.get("object") or {}
                    if type_ == "ERROR":  # 410 Gone: our resourceVersion is too old; anything else: relist too
                        log.info("device-info watch: %s; relisting", obj.get("message") or obj)
                        version = ""
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if type_ not in ("ADDED", "MODIFIED", "DELETED") or not self._mine(obj):
                        continue
                    name = str(obj["metadata"]["name"])
                    if type_ == "DELETED":
                        self._known.discard(name)
                    else:
                        self._known.add(name)
                    await self.handle(type_, obj)
            except _RELIST_ON as e:
                log.warning("device-info watch in %s: %s; relisting in %.0fs", self.namespace, e, self.retry_seconds)
                version = ""
                await asyncio.sleep(self.retry_seconds)
