"""The operator's only way to the Kubernetes API: typed calls over the shared REST client (supernode.kube).

Every method declares the RBAC rules it needs with `@needs(...)`; `REQUIRED_PERMISSIONS` collects
them (plus what kopf itself uses to watch), so the Helm chart's ClusterRole can be tested against it.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from supernode.api import constants as C
from supernode.kube.access import Access, load_access
from supernode.kube.client import TRANSPORT_ERRORS, ApiError, KubeRest
from supernode.kube.client import Resource as Res
from supernode.operator import naming as N

__all__ = ["TRANSPORT_ERRORS", "Access", "ApiError", "KubeClient", "Res", "load_access"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True, order=True)
class Rule:
    api_group: str
    resource: str
    verbs: tuple[str, ...]


def needs(*rules: tuple[str, Iterable[str], Iterable[str]]) -> Callable[[F], F]:
    """Attach the RBAC rules (apiGroup, resources, verbs) a client method needs."""

    def mark(func: F) -> F:
        func.__rbac__ = tuple(  # type: ignore[attr-defined]
            Rule(group, res, tuple(sorted(verbs))) for group, resources, verbs in rules for res in resources)
        return func

    return mark


MODEL_DEPLOYMENTS = Res(C.GROUP, C.VERSION, C.PLURAL, C.KIND)
STATEFULSETS = Res("apps", "v1", "statefulsets", "StatefulSet")
SERVICES = Res("", "v1", "services", "Service")
PDBS = Res("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
LWS = Res(N.LWS_GROUP, N.LWS_VERSION, N.LWS_PLURAL, "LeaderWorkerSet")
PODS = Res("", "v1", "pods", "Pod")
NODES = Res("", "v1", "nodes", "Node", namespaced=False)
EVENTS = Res("", "v1", "events", "Event")
LEASES = Res("coordination.k8s.io", "v1", "leases", "Lease")
CRDS = Res("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False)
NETWORK_POLICIES = Res("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")  # per group, optional
SECRETS = Res("", "v1", "secrets", "Secret")  # per-group Secret (group_secrets.py): created and deleted, never read
CONFIGMAPS = Res("", "v1", "configmaps", "ConfigMap")  # per-group rank table (ranktable_objects.py)
CHILD_KINDS: dict[str, Res] = {r.kind: r for r in (STATEFULSETS, SERVICES, PDBS, LWS, NETWORK_POLICIES, SECRETS,
                                                    CONFIGMAPS)}
_SECRETS = ("", ["secrets"])
_CHILD_RULES: tuple[tuple[str, list[str], list[str]], ...] = (
    ("apps", ["statefulsets"], []), ("", ["services"], []), ("policy", ["poddisruptionbudgets"], []),
                (N.LWS_GROUP, [N.LWS_PLURAL], []), ("networking.k8s.io", ["networkpolicies"], []),
    ("", ["configmaps"], []))


def _child_rules(*verbs: str) -> list[tuple[str, list[str], list[str]]]:
    return [(g, r, list(verbs)) for g, r, _ in _CHILD_RULES]


class KubeClient:
    """Typed calls the operator makes, over the shared REST client (supernode.kube); errors as ApiError."""

    def __init__(self, access: Access, *, timeout: float = 10.0) -> None:
        self._rest = KubeRest(access, request_timeout_s=timeout)

    async def close(self) -> None:
        await self._rest.close()

    @needs(*_child_rules("list"))
    async def list_children(self, res: Res, namespace: str, selector: str) -> list[dict[str, Any]]:
        items, _ = await self._rest.list(res, namespace, selector=selector)
        return items

    @needs(("", ["pods"], ["list", "watch"]))
    async def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        """Every pod in the cluster, and the resourceVersion to watch from."""
        return await self._rest.list(PODS, None)

    @needs(("", ["pods"], ["list", "watch"]))
    def watch_pods(self, resource_version: str, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """Pod watch events cluster-wide from `resource_version`, until the server ends the stream."""
        return self._rest.watch(PODS, None, resource_version, timeout_s)

    @needs(("", ["nodes"], ["list", "watch"]))
    async def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        """Every node, and the resourceVersion to watch from."""
        return await self._rest.list(NODES, None)

    @needs(("", ["nodes"], ["list", "watch"]))
    def watch_nodes(self, resource_version: str, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """Node watch events from `resource_version`, until the server ends the stream."""
        return self._rest.watch(NODES, None, resource_version, timeout_s)

    @needs(("", ["configmaps"], ["list", "watch"]))
    async def list_configmaps(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        """The ConfigMaps of one namespace (the device plugin's reports in kube-system), and the version."""
        return await self._rest.list(CONFIGMAPS, namespace)

    @needs(("", ["configmaps"], ["list", "watch"]))
    def watch_configmaps(self, namespace: str, resource_version: str,
                         timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """ConfigMap watch events in one namespace from `resource_version`, until the server ends the stream."""
        return self._rest.watch(CONFIGMAPS, namespace, resource_version, timeout_s)

    # Children carry an ownerReference with blockOwnerDeletion: true; clusters enforcing owner-reference
    # permissions (OwnerReferencesPermissionEnforcement) require update on the owner's finalizers for that.
    @needs(*_child_rules("create"), (*_SECRETS, ["create"]), (C.GROUP, [f"{C.PLURAL}/finalizers"], ["update"]))
    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = CHILD_KINDS[obj["kind"]]
        result: dict[str, Any] = await self._rest.create(res, obj["metadata"]["namespace"], obj)
        return result

    @needs(*_child_rules("patch"), ("", ["pods"], ["patch"]))
    async def patch(self, res: Res, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._rest.patch(res, namespace, name, patch)
        return result

    @needs(*_child_rules("delete"), ("", ["pods"], ["delete"]), (*_SECRETS, ["delete"]))
    async def delete(self, res: Res, namespace: str, name: str, *, propagation: str = "Background") -> None:
        try:
            await self._rest.delete(res, namespace, name, propagation=propagation)
        except ApiError as e:
            if e.status != 404:
                raise

    @needs((C.GROUP, [f"{C.PLURAL}/status"], ["get", "patch", "update"]))
    async def patch_status(self, namespace: str, name: str, status: dict[str, Any], *,
                           resource_version: str | None = None) -> dict[str, Any]:
        """Merge-patch a ModelDeployment's status. With `resource_version` (what the writer read) the API server
        refuses the patch (409) when the object changed since: lists such as `conditions` are replaced whole,
        so a writer that read before another one wrote would otherwise drop that writer's entries."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        result: dict[str, Any] = await self._rest.patch(MODEL_DEPLOYMENTS, namespace, name, body, sub="status")
        return result

    @needs(("", ["events"], ["create"]), ("events.k8s.io", ["events"], ["create"]))
    async def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved.get("apiVersion", C.API_VERSION),
                               "kind": involved.get("kind", C.KIND), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid", "")},
            "type": type_, "reason": reason, "message": message[:1024], "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": C.FIELD_MANAGER},
            "reportingComponent": C.FIELD_MANAGER, "reportingInstance": C.FIELD_MANAGER,
        }
        await self._rest.create(EVENTS, meta["namespace"], event)

    @needs(("apiextensions.k8s.io", ["customresourcedefinitions"], ["get"]))
    async def crd_installed(self, name: str) -> bool:
        try:
            await self._rest.get(CRDS, None, name)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    @needs(("coordination.k8s.io", ["leases"], ["get"]))
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The leader-election Lease, or None when it does not exist yet."""
        try:
            lease: dict[str, Any] = await self._rest.get(LEASES, namespace, name)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return lease

    @needs(("coordination.k8s.io", ["leases"], ["create"]))
    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        result: dict[str, Any] = await self._rest.create(LEASES, namespace, body)
        return result

    @needs(("coordination.k8s.io", ["leases"], ["update"]))
    async def update_lease(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """PUT with the lease's resourceVersion: a concurrent writer makes this fail with 409."""
        meta = lease["metadata"]
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "spec": spec,
                "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                             "resourceVersion": meta["resourceVersion"]}}
        result: dict[str, Any] = await self._rest.update(LEASES, meta["namespace"], meta["name"], body)
        return result

    @needs((C.GROUP, [C.PLURAL], ["get", "list", "watch", "patch", "update"]),
           ("", ["pods", "nodes"], ["get", "list", "watch"]),
           ("", ["namespaces"], ["get", "list", "watch"]),
           ("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
           *_child_rules("get", "watch"))
    def kopf_watches(self) -> None:
        """Declares (does nothing) what kopf itself does with the operator's identity: watch + annotate."""


def collect_permissions(cls: type) -> tuple[Rule, ...]:
    merged: dict[tuple[str, str], set[str]] = {}
    for attr in vars(cls).values():
        for rule in getattr(attr, "__rbac__", ()):
            merged.setdefault((rule.api_group, rule.resource), set()).update(rule.verbs)
    return tuple(sorted(Rule(g, r, tuple(sorted(v))) for (g, r), v in merged.items()))


REQUIRED_PERMISSIONS: tuple[Rule, ...] = collect_permissions(KubeClient)
