"""A Kubernetes API good enough for a real kopf operator: `kmock.KubernetesEmulator` plus what it lacks.

kmock 0.8 parses requests, records them, serves discovery and runs the HTTP server; this subclass
replaces its object store with one that behaves like kube-apiserver where the operator depends on it
(see shared/SETUP.md): uid / creationTimestamp / monotonic resourceVersion / generation, 409 on a
stale resourceVersion, 422 on a failed JSON-patch test, 201 on create, generateName, PUT,
`/status` and `/scale` subresources, label selectors, watches that subscribe before the snapshot and
resume from `?resourceVersion=`, ownerReference garbage collection (background / foreground /
orphan), delete-collection, `/version/`. No-op writes do not bump resourceVersion (as the real API).
Not emulated: controllers (fake_cluster.py and fake_lws.py play the StatefulSet and LWS ones on the
store), admission, RBAC, strategic-merge list semantics.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering
from label_selectors import matches_selector

Key = tuple[str, str | None, str]  # (group/plural, namespace, name)


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = True  # has a /status subresource (status ignored on main-resource writes)
    scale: bool = False  # has a /scale subresource mapped to spec.replicas / status.replicas


BUILTIN_KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "pods", "Pod"),
    Kind("", "v1", "nodes", "Node", namespaced=False),
    Kind("", "v1", "namespaces", "Namespace", namespaced=False),  # discovery only: kopf waits for it
    Kind("", "v1", "services", "Service"),
    Kind("", "v1", "configmaps", "ConfigMap", status=False),
    Kind("", "v1", "events", "Event", status=False),
    Kind("events.k8s.io", "v1", "events", "Event", status=False),
    Kind("apps", "v1", "statefulsets", "StatefulSet", scale=True),
    Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", status=False),
    Kind("", "v1", "configmaps", "ConfigMap", status=False),  # device plugins' per-node reports
)
LWS_KIND = Kind("leaderworkerset.x-k8s.io", "v1", "leaderworkersets", "LeaderWorkerSet", scale=True)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = code, reason, message


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic-merge and apply, which it approximates)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch; a failed `test` raises 422 like the real API."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1] if parts else ""
        kind = op["op"]
        if kind == "test":
            try:
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
            except (KeyError, IndexError, ValueError):
                current = None
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                               f"test operation failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(idx, op["value"])
                else:
                    parent[idx] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON-patch op {kind!r}")
    return doc


@attrs.define(kw_only=True)
class K8sEmulator(kmock.KubernetesEmulator):
    """Run with `async with K8sEmulator() as k8s, kmock.Server(k8s) as srv:`; `srv.url` is the API."""

    kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict, init=False)
    store: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    rv: int = attrs.field(default=0, init=False)
    history: collections.deque[tuple[int, str, dict[str, Any]]] = attrs.field(
        factory=lambda: collections.deque(maxlen=20_000), init=False)
    watchers: list[tuple[str, asyncio.Queue[dict[str, Any] | None]]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback["get /version/"] << self._serve_server_version
        for kind in BUILTIN_KINDS:
            self.declare(kind)

    # --- setup ------------------------------------------------------------------------------------
    def declare(self, kind: Kind, *, shortnames: Iterable[str] = ()) -> None:
        self.kinds[(kind.group, kind.plural)] = kind
        subs = {s for s, on in (("status", kind.status), ("scale", kind.scale)) if on}
        self.resources[f"{kind.group}/{kind.version}/{kind.plural}".lstrip("/")] = kmock.ResourceInfo(
            kind=kind.kind, singular=kind.kind.lower(), namespaced=kind.namespaced, shortnames=set(shortnames),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
            subresources=subs)

    async def _serve_version(self, request: rendering.Request) -> Any:
        payload = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # kmock says "/v1" for the core group
        return payload

    # --- test-facing helpers ----------------------------------------------------------------------
    def objects_of(self, plural: str, group: str = "", namespace: str | None = None,
                   selector: str | None = None, *, copy_: bool = True) -> list[dict[str, Any]]:
        """Stored objects of one kind, sorted by key (`copy_=False`: live dicts, read-only use)."""
        gp = f"{group}/{plural}"
        found = sorted((k, o) for k, o in self.store.items() if k[0] == gp)
        return [copy.deepcopy(o) if copy_ else o for (_, ns, _), o in found
                if (namespace is None or ns == namespace)
                and matches_selector(o.get("metadata", {}).get("labels", {}), selector)]

    def get(self, plural: str, namespace: str | None, name: str, group: str = "") -> dict[str, Any] | None:
        obj = self.store.get((f"{group}/{plural}", namespace, name))
        return copy.deepcopy(obj) if obj else None

    def writes(self, since: int = 0) -> list[str]:
        """Mutating requests (method + path) recorded since request number `since`."""
        return [f"{r.method.value} {r.url.path}" for r in list(self._requests)[since:]
                if r.method.value in ("POST", "PUT", "PATCH", "DELETE")]

    def reads(self, since: int = 0) -> list[str]:
        """GET requests (path, with `?watch` when one) recorded since request number `since`."""
        return [f"{r.url.path}{'?watch' if r.url.query.get('watch') in ('true', '1') else ''}"
                for r in list(self._requests)[since:] if r.method.value == "GET"]

    async def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object directly (a test acting as a controller or kubelet)."""
        group, _, _version = obj["apiVersion"].rpartition("/")
        kind = next(k for k in self.kinds.values() if k.kind == obj["kind"] and k.group == group)
        return self._create(kind, obj.get("metadata", {}).get("namespace"), copy.deepcopy(obj))

    async def patch_object(self, plural: str, namespace: str | None, name: str, patch: dict[str, Any],
                           group: str = "", subresource: str | None = None) -> dict[str, Any]:
        kind = self.kinds[(group, plural)]
        return self._patch(kind, namespace, name, subresource, "application/merge-patch+json", patch)

    async def delete_object(self, plural: str, namespace: str | None, name: str, group: str = "",
                            propagation: str = "Background") -> None:
        self._delete(self.kinds[(group, plural)], namespace, name, propagation)

    # --- request dispatch -------------------------------------------------------------------------
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser takes `/api/v1/namespaces` for the start of a namespaced path and fails on it;
        # kopf lists and watches Namespaces when it serves a namespace list (`--namespace`). Served here.
        if raw_request.method == "GET" and raw_request.path.rstrip("/") == "/api/v1/namespaces":
            kind, params = self.kinds[("", "namespaces")], dict(raw_request.query)
            if params.get("watch") in ("true", "1"):
                return await self._watch(raw_request, kind, None, params)
            return self._json(self._list(kind, None, params))
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res is None or res.plural is None or (res.group, res.plural) not in self.kinds:
            return await super()._handle(request)
        kind = self.kinds[(res.group, res.plural)]
        raw = request._raw_request
        assert raw is not None
        method, params = raw.method, request.params
        ns, name, sub = request.namespace, request.name, request.subresource
        try:
            if method == "GET" and params.get("watch") in ("true", "1"):
                return await self._watch(raw, kind, ns, params)
            if method == "GET" and name is None:
                return self._json(self._list(kind, ns, params))
            if method == "GET":
                return self._json(self._view(kind, self._must(kind, ns, name), sub))
            if method == "POST" and name is None:
                return self._json(self._create(kind, ns, request.data or {}), 201)
            if method == "PUT" and name is not None:
                return self._json(self._put(kind, ns, name, sub, request.data or {}))
            if method == "PATCH" and name is not None:
                body = request.data if request.data is not None else yaml.safe_load(request.text or "{}")
                ctype = raw.headers.get("Content-Type", "application/merge-patch+json").split(";")[0]
                return self._json(self._patch(kind, ns, name, sub, ctype, body, params))
            if method == "DELETE" and name is not None:
                opts = request.data if isinstance(request.data, dict) else {}
                policy = opts.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
                return self._json(self._delete(kind, ns, name, policy))
            if method == "DELETE":
                for obj in self._select(kind, ns, params):
                    self._delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], "Background")
                return self._json({"kind": "Status", "apiVersion": "v1", "status": "Success"})
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        except ApiError as e:
            return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "code": e.status, "reason": e.reason, "message": e.message}, e.status)

    @staticmethod
    def _json(payload: dict[str, Any], status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(payload, status=status)

    # --- storage --------------------------------------------------------------------------------
    @staticmethod
    def _key(kind: Kind, ns: str | None, name: str) -> Key:
        return (f"{kind.group}/{kind.plural}", ns if kind.namespaced else None, name)

    def _must(self, kind: Kind, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(self._key(kind, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{kind.plural}.{kind.group or "core"} "{name}" not found')
        return obj

    def _select(self, kind: Kind, ns: str | None, params: Any) -> list[dict[str, Any]]:
        selector = params.get("labelSelector")
        fields = dict(f.split("=", 1) for f in params.get("fieldSelector", "").split(",") if "=" in f)
        out = []
        gp = f"{kind.group}/{kind.plural}"
        for (_, ons, name), obj in sorted((k, o) for k, o in self.store.items() if k[0] == gp):
            if ns is not None and ons != ns:
                continue
            if not matches_selector(obj["metadata"].get("labels", {}), selector):
                continue
            if fields.get("metadata.name", name) != name or fields.get("metadata.namespace", ons) != ons:
                continue
            out.append(obj)
        return out

    def _list(self, kind: Kind, ns: str | None, params: Any) -> dict[str, Any]:
        return {"apiVersion": f"{kind.group}/{kind.version}".lstrip("/"), "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": [copy.deepcopy(o) for o in self._select(kind, ns, params)]}

    def _view(self, kind: Kind, obj: dict[str, Any], sub: str | None) -> dict[str, Any]:
        if sub != "scale":
            return copy.deepcopy(obj)
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion")
                             if k in obj["metadata"]},
                "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
                "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                           "selector": obj.get("status", {}).get("selector", "")}}

    def _emit(self, kind: Kind, type_: str, obj: dict[str, Any]) -> None:
        gp = f"{kind.group}/{kind.plural}"
        event = {"type": type_, "object": copy.deepcopy(obj)}
        self.history.append((self.rv, gp, event))
        for wgp, queue in self.watchers:
            if wgp == gp:
                queue.put_nowait(event)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _create(self, kind: Kind, ns: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        ns = ns or meta.get("namespace")
        if kind.namespaced:
            if not ns:
                raise ApiError(422, "Invalid", "metadata.namespace: Required value")
            meta["namespace"] = ns
        key = self._key(kind, ns, meta["name"])
        if key in self.store:
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{meta["name"]}" already exists')
        for ref in meta.get("ownerReferences", []):
            if not ref.get("uid"):
                raise ApiError(422, "Invalid", "metadata.ownerReferences.uid: Invalid value: \"\"")
        if kind.status:
            obj.pop("status", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("resourceVersion", None)
        obj.setdefault("apiVersion", f"{kind.group}/{kind.version}".lstrip("/"))
        obj.setdefault("kind", kind.kind)
        self._bump(obj)
        self.store[key] = obj
        self._emit(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    def _commit(self, kind: Kind, old: dict[str, Any], new: dict[str, Any], sub: str | None,
                expected_rv: str | None) -> dict[str, Any]:
        meta = old["metadata"]
        if expected_rv and expected_rv != meta["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{meta["name"]}": '
                           "the object has been modified; please apply your changes to the latest version")
        # Server-owned fields are not client-writable.
        for field in ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name",
                      "deletionTimestamp"):
            if field in meta:
                new.setdefault("metadata", {})[field] = meta[field]
            else:
                new.setdefault("metadata", {}).pop(field, None)
        if sub in ("status",):
            new = {**copy.deepcopy(old), "status": new.get("status", {})}
        elif kind.status:
            new["status"] = copy.deepcopy(old.get("status")) if "status" in old else None
            if new["status"] is None:
                new.pop("status")
        if new == old:
            return copy.deepcopy(old)  # no-op: no new resourceVersion, no watch event
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = meta.get("generation", 1) + 1
        self._bump(new)
        key = self._key(kind, meta.get("namespace"), meta["name"])
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.store[key]
            self._emit(kind, "DELETED", new)
            self._collect(new["metadata"]["uid"])
        else:
            self.store[key] = new
            self._emit(kind, "MODIFIED", new)
        return copy.deepcopy(new)

    def _patch(self, kind: Kind, ns: str | None, name: str, sub: str | None, ctype: str, body: Any,
               params: Any = None) -> dict[str, Any]:
        key = self._key(kind, ns, name)
        if key not in self.store and ctype == "application/apply-patch+yaml":
            return self._create(kind, ns, copy.deepcopy(body))
        old = self._must(kind, ns, name)
        base = copy.deepcopy(old)
        if sub == "scale":
            replicas = (body or {}).get("spec", {}).get("replicas") if isinstance(body, dict) else None
            if isinstance(body, list):
                replicas = json_patch(self._view(kind, old, "scale"), body)["spec"]["replicas"]
            new = merge_patch(base, {"spec": {"replicas": replicas}})
            self._commit(kind, old, new, None, None)
            return self._view(kind, self._must(kind, ns, name), "scale")
        if ctype == "application/json-patch+json":
            new = json_patch(base, body)
            expected = None
        else:
            new = merge_patch(base, body)
            expected = (body or {}).get("metadata", {}).get("resourceVersion")
        return self._commit(kind, old, new, sub, expected)

    def _put(self, kind: Kind, ns: str | None, name: str, sub: str | None, body: dict[str, Any]) -> dict[str, Any]:
        old = self._must(kind, ns, name)
        if sub == "scale":
            return self._patch(kind, ns, name, sub, "application/merge-patch+json", body)
        expected = body.get("metadata", {}).get("resourceVersion")
        return self._commit(kind, old, copy.deepcopy(body), sub, expected)

    def _delete(self, kind: Kind, ns: str | None, name: str, policy: str) -> dict[str, Any]:
        obj = self._must(kind, ns, name)
        meta = obj["metadata"]
        if policy == "Orphan":
            self._orphan(meta["uid"])
        elif policy == "Foreground":
            # Dependents go first; the owner disappears once they are gone (synchronously here).
            self._collect(meta["uid"])
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = _now()
                self._bump(new)
                self.store[self._key(kind, meta.get("namespace"), name)] = new
                self._emit(kind, "MODIFIED", new)
                return copy.deepcopy(new)
            return copy.deepcopy(obj)
        del self.store[self._key(kind, meta.get("namespace"), name)]
        self._bump(obj)
        self._emit(kind, "DELETED", obj)
        self._collect(meta["uid"])
        return copy.deepcopy(obj)

    def _dependents(self, uid: str) -> list[tuple[Kind, dict[str, Any]]]:
        out = []
        for (gp, _, _), obj in list(self.store.items()):
            if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences", [])):
                group, _, plural = gp.partition("/")
                out.append((self.kinds[(group, plural)], obj))
        return out

    def _collect(self, uid: str) -> None:
        """Garbage collector: delete objects whose owners are all gone (background policy)."""
        live = {o["metadata"]["uid"] for o in self.store.values()}
        for kind, obj in self._dependents(uid):
            owners = {r.get("uid") for r in obj["metadata"].get("ownerReferences", [])}
            meta = obj["metadata"]
            if not owners & live and self._key(kind, meta.get("namespace"), meta["name"]) in self.store:
                self._delete(kind, meta.get("namespace"), meta["name"], "Background")

    def _orphan(self, uid: str) -> None:
        for kind, obj in self._dependents(uid):
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = [r for r in obj["metadata"]["ownerReferences"] if r["uid"] != uid]
            self._commit(kind, obj, new, None, None)

    # --- watch ---------------------------------------------------------------------------------
    async def _watch(self, raw: aiohttp.web.BaseRequest, kind: Kind, ns: str | None,
                     params: Any) -> aiohttp.web.StreamResponse:
        gp = f"{kind.group}/{kind.plural}"
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        entry = (gp, queue)
        self.watchers.append(entry)  # subscribe first: nothing written meanwhile is lost
        try:
            since = params.get("resourceVersion", "")
            if since not in ("", "0"):
                oldest = self.history[0][0] if self.history else self.rv + 1
                if int(since) < oldest - 1 and int(since) < self.rv:
                    backlog = [{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "code": 410,
                                "reason": "Expired", "message": f"too old resource version: {since}"}}]
                else:
                    backlog = [e for rv, g, e in self.history if g == gp and rv > int(since)]
            else:
                backlog = [{"type": "ADDED", "object": copy.deepcopy(o)} for o in self._select(kind, ns, {})]
            resp = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(raw)
            timeout = float(params.get("timeoutSeconds", 0)) or None
            selector = params.get("labelSelector")
            deadline = asyncio.get_running_loop().time() + timeout if timeout else None
            for event in backlog:
                if self._wanted(event, ns, selector):
                    await resp.write(json.dumps(event).encode() + b"\n")
            while True:
                left = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if left is not None and left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if event is None:
                    break
                if self._wanted(event, ns, selector):
                    await resp.write(json.dumps(event).encode() + b"\n")
            await resp.write_eof()
            return resp
        finally:
            self.watchers.remove(entry)

    @staticmethod
    def _wanted(event: dict[str, Any], ns: str | None, selector: str | None) -> bool:
        meta = event["object"].get("metadata", {})
        if event["type"] == "ERROR":
            return True
        return (ns is None or meta.get("namespace") == ns) and matches_selector(meta.get("labels", {}), selector)

    def close_watches(self) -> None:
        """End every open watch stream (clients reconnect with their last resourceVersion)."""
        for _, queue in self.watchers:
            queue.put_nowait(None)

    @property
    def request_count(self) -> int:
        return len(self._requests)
