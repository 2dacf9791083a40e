"""Discovery's only way to the Kubernetes API: a read-only view (LIST and WATCH) over the shared REST
client (supernode.kube), which owns connection settings, TLS, tokens and watch framing.

Every request discovery makes goes through `KubeClient.list` / `.watch`, so those method names are
the RBAC verbs the router needs (tests/helm/test_helm_rbac.py derives them from here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from supernode.kube.access import Access, load_access
from supernode.kube.client import ApiError, KubeRest
from supernode.kube.client import Resource as KubeResource

__all__ = ["Access", "ApiError", "KubeClient", "KubeResource", "load_access"]


class KubeClient:
    """Owns one REST client; `close()` it (KubernetesDiscovery does, when its task stops)."""

    def __init__(self, access: Access, *, connect_timeout_s: float = 5.0, request_timeout_s: float = 30.0):
        self._rest = KubeRest(access, connect_timeout_s=connect_timeout_s, request_timeout_s=request_timeout_s)

    async def list(self, resource: KubeResource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """LIST: (items, resourceVersion of the snapshot)."""
        return await self._rest.list(resource, namespace)

    def watch(self, resource: KubeResource, namespace: str | None, resource_version: str,
              timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """WATCH from `resource_version` until the server ends the stream (`timeoutSeconds`) or it fails."""
        return self._rest.watch(resource, namespace, resource_version, timeout_s)

    async def close(self) -> None:
        await self._rest.close()
