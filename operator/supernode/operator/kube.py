"""The one module that talks to the Kubernetes API (plain REST over aiohttp, as kopf itself uses).

Every method declares the RBAC rules it needs with `@needs(...)`; `REQUIRED_PERMISSIONS` collects
them (plus what kopf itself uses to watch), so the Helm chart's ClusterRole can be tested against it.
"""

from __future__ import annotations

import datetime
import json as _json
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from supernode.api import constants as C
from supernode.operator import naming as N

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


@dataclass(frozen=True, slots=True)
class Res:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


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
CHILD_KINDS: dict[str, Res] = {r.kind: r for r in (STATEFULSETS, SERVICES, PDBS, LWS, NETWORK_POLICIES, SECRETS)}
_SECRETS = ("", ["secrets"])
_CHILD_RULES: tuple[tuple[str, list[str], list[str]], ...] = (
    ("apps", ["statefulsets"], []), ("", ["services"], []), ("policy", ["poddisruptionbudgets"], []),
                (N.LWS_GROUP, [N.LWS_PLURAL], []), ("networking.k8s.io", ["networkpolicies"], []))


def _child_rules(*verbs: str) -> list[tuple[str, list[str], list[str]]]:
    return [(g, r, list(verbs)) for g, r, _ in _CHILD_RULES]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)
"""What a call raises when the API server cannot be reached (besides `ApiError` for an API answer)."""


@dataclass(frozen=True, slots=True)
class Connection:
    server: str
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


def load_connection(server: str | None = None, context: str | None = None) -> Connection:
    """An explicit server URL (tests), else in-cluster service account, else kubeconfig."""
    if server:
        return Connection(server=server.rstrip("/"))
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(context=context, client_configuration=cfg)
    token = (cfg.api_key or {}).get("authorization", "").removeprefix("Bearer ").strip() or None
    return Connection(server=cfg.host.rstrip("/"), token=token, ca_file=cfg.ssl_ca_cert, cert_file=cfg.cert_file,
                      key_file=cfg.key_file, insecure=not cfg.verify_ssl)


class KubeClient:
    """Typed calls the operator makes; one httpx connection pool; errors as `ApiError`."""

    def __init__(self, conn: Connection, *, timeout: float = 10.0) -> None:
        self._conn, self._timeout = conn, timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily inside the running loop
            conn = self._conn
            ssl_ctx: ssl.SSLContext | bool = not conn.insecure
            if conn.ca_file and not conn.insecure:
                ssl_ctx = ssl.create_default_context(cafile=conn.ca_file)
            if conn.cert_file and conn.key_file and isinstance(ssl_ctx, ssl.SSLContext):
                ssl_ctx.load_cert_chain(conn.cert_file, conn.key_file)
            headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
            self._session = aiohttp.ClientSession(
                base_url=conn.server + "/", headers=headers, connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=64),
                timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                    content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else None
        async with self._http().request(method, path.lstrip("/"), json=json, params=params, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    body = _json.loads(text)
                except ValueError:
                    body = {"reason": resp.reason or "", "message": text[:500]}
                raise ApiError(resp.status, body.get("reason", ""), body.get("message", ""))
            return _json.loads(text) if text else None

    @needs(*_child_rules("list"))
    async def list_children(self, res: Res, namespace: str, selector: str) -> list[dict[str, Any]]:
        body = await self._call("GET", res.path(namespace), params={"labelSelector": selector})
        items = list(body.get("items", []))
        for item in items:  # list items carry no kind/apiVersion on a real API server
            item.setdefault("kind", res.kind)
            item.setdefault("apiVersion", res.api_version)
        return items

    # Children carry an ownerReference with blockOwnerDeletion: true; clusters enforcing owner-reference
    # permissions (OwnerReferencesPermissionEnforcement) require update on the owner's finalizers for that.
    @needs(*_child_rules("create"), (*_SECRETS, ["create"]), (C.GROUP, [f"{C.PLURAL}/finalizers"], ["update"]))
    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = CHILD_KINDS[obj["kind"]]
        result: dict[str, Any] = await self._call("POST", res.path(obj["metadata"]["namespace"]), json=obj)
        return result

    @needs(*_child_rules("patch"), ("", ["pods"], ["patch"]))
    async def patch(self, res: Res, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("PATCH", res.path(namespace, name), json=patch,
                                                  content_type="application/merge-patch+json")
        return result

    @needs(*_child_rules("delete"), ("", ["pods"], ["delete"]), (*_SECRETS, ["delete"]))
    async def delete(self, res: Res, namespace: str, name: str, *, propagation: str = "Background") -> None:
        try:
            await self._call("DELETE", res.path(namespace, name), json={
                "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})
        except ApiError as e:
            if e.code != 404:
                raise

    @needs((C.GROUP, [f"{C.PLURAL}/status"], ["get", "patch", "update"]))
    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", MODEL_DEPLOYMENTS.path(namespace, name, "status"), json={"status": status},
                         content_type="application/merge-patch+json")

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
        await self._call("POST", EVENTS.path(meta["namespace"]), json=event)

    @needs(("apiextensions.k8s.io", ["customresourcedefinitions"], ["get"]))
    async def crd_installed(self, name: str) -> bool:
        try:
            await self._call("GET", CRDS.path(name=name))
        except ApiError as e:
            if e.code == 404:
                return False
            raise
        return True

    @needs(("coordination.k8s.io", ["leases"], ["get"]))
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The leader-election Lease, or None when it does not exist yet."""
        try:
            lease: dict[str, Any] = await self._call("GET", LEASES.path(namespace, name))
        except ApiError as e:
            if e.code == 404:
                return None
            raise
        return lease

    @needs(("coordination.k8s.io", ["leases"], ["create"]))
    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        result: dict[str, Any] = await self._call("POST", LEASES.path(namespace), json=body)
        return result

    @needs(("coordination.k8s.io", ["leases"], ["update"]))
    async def update_lease(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """PUT with the lease's resourceVersion: a concurrent writer makes this fail with 409."""
        meta = lease["metadata"]
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "spec": spec,
                "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                             "resourceVersion": meta["resourceVersion"]}}
        result: dict[str, Any] = await self._call("PUT", LEASES.path(meta["namespace"], meta["name"]), json=body)
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
