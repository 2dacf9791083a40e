"""`kubernetes` discovery: group-leader pods (labelled by the operator) + ModelDeployments → Endpoints.

`endpoints_from_objects` is the pure translation (tested without a cluster). `KubernetesDiscovery`
relists leader pods and ModelDeployments every `relist_interval_s` through the official client (in a
worker thread) and applies the result; a failed list keeps the last endpoint set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.models import EngineType, Mode

log = logging.getLogger("supernode.router.discovery")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_port(pod: Mapping[str, Any], port_name: str, default: int) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == port_name and port.get("containerPort"):
                return int(port["containerPort"])
    return default


def _md_index(mds: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for md in mds:
        meta = md.get("metadata") or {}
        out[(meta.get("namespace") or "", meta.get("name") or "")] = md
    return out


def _capacity_limited(md: Mapping[str, Any]) -> bool:
    conditions = (md.get("status") or {}).get("conditions") or []
    return any(c.get("type") == C.COND_CAPACITY_LIMITED and c.get("status") == "True" for c in conditions)


def endpoint_from_pod(pod: Mapping[str, Any], md: Mapping[str, Any] | None, *, port_name: str = "http",
                      default_port: int = 8000, default_max_concurrency: int = 32) -> Endpoint | None:
    """One leader pod (+ its ModelDeployment, if known) → an Endpoint; None if it cannot serve."""
    meta = pod.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    if labels.get(C.LABEL_ROLE) != C.ROLE_LEADER:
        return None
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    spec: Mapping[str, Any] = (md or {}).get("spec") or {}
    model = (spec.get("model") or {}).get("name") or labels.get(C.LABEL_MODEL)
    if not model:
        return None
    modes = _csv(annotations.get(C.ANNOTATION_MODES)) or list(spec.get("modes") or [m.value for m in Mode])
    aliases = _csv(annotations.get(C.ANNOTATION_ALIASES)) or list((spec.get("model") or {}).get("aliases") or [])
    engine = annotations.get(C.ANNOTATION_ENGINE_TYPE) or (spec.get("engine") or {}).get("type") or "builtin"
    draining = annotations.get(C.ANNOTATION_DRAINING, "").lower() in ("true", "1", "yes") or bool(
        meta.get("deletionTimestamp"))
    namespace = meta.get("namespace") or ""
    deployment = labels.get(C.LABEL_DEPLOYMENT, "")
    try:
        engine_type = EngineType(engine)
        parsed_modes = [Mode(m) for m in modes]
    except ValueError as e:
        log.warning("pod %s/%s: %s; skipped", namespace, meta.get("name"), e)
        return None
    return Endpoint(
        url=f"http://{ip}:{_pod_port(pod, port_name, default_port)}",
        model=model,
        aliases=aliases,
        modes=parsed_modes,
        deployment=f"{namespace}/{deployment}" if namespace else deployment,
        group=int(labels.get(C.LABEL_GROUP, "0") or 0),
        engine_type=engine_type,
        ready=_pod_ready(pod),
        draining=draining,
        max_concurrency=default_max_concurrency,
        capacity_limited=_capacity_limited(md) if md else False,
    )


def endpoints_from_objects(pods: Sequence[Mapping[str, Any]], mds: Sequence[Mapping[str, Any]],
                           **kwargs: Any) -> list[Endpoint]:
    index = _md_index(mds)
    out: list[Endpoint] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        md = index.get((meta.get("namespace") or "", (meta.get("labels") or {}).get(C.LABEL_DEPLOYMENT, "")))
        ep = endpoint_from_pod(pod, md, **kwargs)
        if ep is not None:
            out.append(ep)
    return out


class KubernetesDiscovery:
    def __init__(self, on_change: Callable[[list[Endpoint]], None], *, namespace: str | None,
                 relist_interval_s: float, port_name: str, default_port: int, default_max_concurrency: int):
        self.on_change = on_change
        self.namespace = namespace
        self.relist_interval_s = relist_interval_s
        self.kwargs = {"port_name": port_name, "default_port": default_port,
                       "default_max_concurrency": default_max_concurrency}
        self.last_error: str | None = None

    def _list(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from kubernetes import client, config  # imported here: only this backend needs it

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.ApiClient()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        selector = f"{C.LABEL_ROLE}={C.ROLE_LEADER}"
        if self.namespace:
            pods = core.list_namespaced_pod(self.namespace, label_selector=selector)
            mds: Any = custom.list_namespaced_custom_object(C.GROUP, C.VERSION, self.namespace, C.PLURAL)
        else:
            pods = core.list_pod_for_all_namespaces(label_selector=selector)
            mds = custom.list_cluster_custom_object(C.GROUP, C.VERSION, C.PLURAL)
        return [api.sanitize_for_serialization(p) for p in pods.items], list(mds.get("items") or [])

    async def run(self) -> None:
        while True:
            try:
                pods, mds = await asyncio.to_thread(self._list)
                self.on_change(endpoints_from_objects(pods, mds, **self.kwargs))
                self.last_error = None
            except Exception as e:  # API down or RBAC missing: keep the last endpoints, retry
                self.last_error = str(e)
                log.error("kubernetes discovery failed, keeping the last endpoints: %s", e)
            await asyncio.sleep(self.relist_interval_s)
