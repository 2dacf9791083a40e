"""`kubernetes` discovery: engine pods (labelled by the operator) + ModelDeployments → Endpoints, one per
group leader (worker pods add the KV event publishers of the data-parallel ranks they run, dp_pods.py).

`endpoints_from_objects` is the pure translation (tested without a cluster). `KubernetesDiscovery`
lists then watches both (kube_informer), so a change reaches the routing table within `debounce_s`
of the API event; a failed list or watch keeps the last endpoint set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.models import EngineType, Mode
from supernode.router.discovery.dp_pods import group_key, group_members, rank_publishers
from supernode.router.discovery.kube_client import Access, KubeClient, KubeResource, load_access
from supernode.router.discovery.kube_informer import Informer
from supernode.router.metrics import RouterMetrics

log = logging.getLogger("supernode.router.discovery")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_port(pod: Mapping[str, Any], port_name: str, default: int) -> int:
    return _named_port(pod, port_name) or default


def _named_port(pod: Mapping[str, Any], port_name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == port_name and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # an IPv6 pod IP inside a URL


def kv_event_addresses(pod: Mapping[str, Any], engine: EngineType, ip: str) -> tuple[str, str, int]:
    """(kv_events, kv_events_replay, data-parallel ranks) of an Endpoint for a leader pod. vLLM and SGLang
    leaders publish on the named ports the operator renders for spec.engine.kvEvents (ZMQ, vLLM's format),
    one pair per data-parallel rank (C.kv_port_name; rank r on rank 0's ports + r); without them, "auto".
    Built-in engines stay on "auto": their HTTP stream resyncs from a snapshot, which the ZMQ replay cannot."""
    pub = _named_port(pod, C.PORT_KV_EVENTS)
    if engine == EngineType.BUILTIN or pub is None:
        return "auto", "", 1
    replay = _named_port(pod, C.PORT_KV_REPLAY)
    ranks = 1
    while ranks < 1024 and _named_port(pod, C.kv_port_name(C.PORT_KV_EVENTS, ranks)) == pub + ranks:
        ranks += 1
    host = _host(ip)
    return f"tcp://{host}:{pub}", f"tcp://{host}:{replay}" if replay else "", ranks


def _md_index(mds: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for md in mds:
        meta = md.get("metadata") or {}
        out[(meta.get("namespace") or "", meta.get("name") or "")] = md
    return out


def _capacity_limited(md: Mapping[str, Any], pool: str = "") -> bool:
    """The deployment's CapacityLimited condition; for a group of a pool, that pool's own verdict."""
    status = md.get("status") or {}
    if pool:
        return any(p.get("name") == pool and p.get("capacityLimited") for p in status.get("pools") or [])
    conditions = status.get("conditions") or []
    return any(c.get("type") == C.COND_CAPACITY_LIMITED and c.get("status") == "True" for c in conditions)


def endpoint_from_pod(pod: Mapping[str, Any], md: Mapping[str, Any] | None, *, port_name: str = "http",
                      default_port: int = 8000, default_max_concurrency: int = 32,
                      members: Mapping[int, Mapping[str, Any]] | None = None) -> Endpoint | None:
    """One leader pod (+ its ModelDeployment, if known; ``members``: its group's pods by index, for the
    publishers of data-parallel ranks on worker pods) → an Endpoint; None if it cannot serve."""
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
    fault = str(annotations.get(C.ANNOTATION_DEVICE_FAULT) or "")  # the operator fenced it: a device fails
    try:
        engine_type = EngineType(engine)
        parsed_modes = [Mode(m) for m in modes]
    except ValueError as e:
        log.warning("pod %s/%s: %s; skipped", namespace, meta.get("name"), e)
        return None
    kv_events, kv_replay, ranks = kv_event_addresses(pod, engine_type, ip)
    spread = rank_publishers(pod, members or {}, ranks, named_port=_named_port, ready=_pod_ready,
                             host=_host) if kv_events.startswith("tcp://") and ranks > 1 else None
    return Endpoint(
        url=f"http://{_host(ip)}:{_pod_port(pod, port_name, default_port)}",
        model=model,
        aliases=aliases,
        modes=parsed_modes,
        deployment=f"{namespace}/{deployment}" if namespace else deployment,
        group=int(labels.get(C.LABEL_GROUP, "0") or 0),
        engine_type=engine_type,
        ready=_pod_ready(pod) and not fault,
        draining=draining,
        fault=fault,
        max_concurrency=int(_positive(annotations.get(C.ANNOTATION_MAX_CONCURRENCY), default_max_concurrency)),
        capacity_limited=_capacity_limited(md, labels.get(C.LABEL_POOL, "")) if md else False,
        pool=labels.get(C.LABEL_POOL, ""),
        capacity_weight=min(1000.0, _positive(annotations.get(C.ANNOTATION_CAPACITY_WEIGHT), 1.0)),
        kv_events=kv_events,
        kv_events_replay=kv_replay,
        data_parallel_size=ranks,
        rank_kv_events=spread[0] if spread else [],
        rank_kv_events_replay=spread[1] if spread else [],
    )


def _positive(raw: str | None, default: float) -> float:
    """A positive, finite number from an annotation the operator wrote (the default when absent or not one)."""
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if 0 < value < float("inf") else default


def endpoints_from_objects(pods: Sequence[Mapping[str, Any]], mds: Sequence[Mapping[str, Any]],
                           **kwargs: Any) -> list[Endpoint]:
    index = _md_index(mds)
    groups = group_members(pods)
    out: list[Endpoint] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(C.LABEL_ROLE) != C.ROLE_LEADER:
            continue  # a worker pod: only its group's leader reads it (data-parallel ranks it publishes)
        md = index.get((meta.get("namespace") or "", (meta.get("labels") or {}).get(C.LABEL_DEPLOYMENT, "")))
        ep = endpoint_from_pod(pod, md, members=groups.get(group_key(pod)), **kwargs)
        if ep is not None:
            out.append(ep)
    return out


# Every engine pod (leaders and workers): a worker pod can publish KV events of data-parallel ranks it runs.
ENGINE_PODS = KubeResource("", "v1", "pods", label_selector=C.LABEL_DEPLOYMENT)  # every pod of a group has it
MODEL_DEPLOYMENTS = KubeResource(C.GROUP, C.VERSION, C.PLURAL)


class KubernetesDiscovery:
    """Two informers (engine pods, ModelDeployments) feed one debounced recompute of the endpoints.

    Nothing is published until both have listed once (a pod without its ModelDeployment would get
    default modes); after that each change publishes within `debounce_s`, and only if the endpoint
    set actually changed. An API outage keeps the last endpoints."""

    def __init__(self, on_change: Callable[[list[Endpoint]], None], *, namespace: str | None,
                 port_name: str, default_port: int, default_max_concurrency: int, api_url: str | None = None,
                 resync_interval_s: float = 300.0, watch_timeout_s: float = 290.0, debounce_s: float = 0.1,
                 client: KubeClient | None = None, metrics: RouterMetrics | None = None):
        self.on_change = on_change
        self.namespace = namespace
        self.api_url = api_url
        self.debounce_s = debounce_s
        self.kwargs = {"port_name": port_name, "default_port": default_port,
                       "default_max_concurrency": default_max_concurrency}
        self._client = client
        self.metrics = metrics
        self._dirty = asyncio.Event()
        self.watch_timeout_s, self.resync_interval_s = watch_timeout_s, resync_interval_s
        self.pods: Informer | None = None
        self.mds: Informer | None = None
        self.published: list[Endpoint] | None = None
        self.config_error: str | None = None
        self.publishes = 0

    @property
    def last_error(self) -> str | None:
        errors = [i.last_error for i in (self.pods, self.mds) if i is not None and i.last_error]
        if self.pods is None and self.config_error:
            errors.append(self.config_error)
        return "; ".join(errors) or None

    def endpoints(self) -> list[Endpoint]:
        assert self.pods is not None and self.mds is not None
        return endpoints_from_objects(self.pods.cache.items(), self.mds.cache.items(), **self.kwargs)

    def scale_to_zero_models(self) -> set[str]:
        """Models (and aliases) of ModelDeployments with `autoscaling.minReplicas: 0`: the router keeps
        serving them with no endpoint and holds their requests while the first group starts."""
        out: set[str] = set()
        for md in self.mds.cache.items() if self.mds is not None else ():
            spec = md.get("spec") or {}
            auto = spec.get("autoscaling") or {}
            if auto and int(auto.get("minReplicas", 1)) == 0 and auto.get("mode", "Builtin") == "Builtin":
                model = spec.get("model") or {}
                out |= {str(n) for n in [model.get("name"), *(model.get("aliases") or [])] if n}
        return out

    async def _publish_loop(self) -> None:
        assert self.pods is not None and self.mds is not None
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce_s)  # coalesce a burst of events into one recompute
            self._dirty.clear()
            if not (self.pods.cache.synced and self.mds.cache.synced):
                continue
            endpoints = self.endpoints()
            if endpoints != self.published:
                self.published = endpoints
                self.publishes += 1
                self.on_change(endpoints)
                log.info("discovery: %d endpoints (%d draining)", len(endpoints),
                         sum(e.draining for e in endpoints))

    async def _load_access(self) -> Access:
        """No API settings (no service account, no kubeconfig) is an error to fix, not to crash on:
        log it and try again now and then, serving whatever endpoints are known (none)."""
        while True:
            try:
                return await asyncio.to_thread(load_access, self.api_url)
            except Exception as e:
                self.config_error = f"kubernetes API settings: {type(e).__name__}: {e}"
                log.error("discovery: %s; retrying in 30s", self.config_error)
                await asyncio.sleep(30)

    async def run(self) -> None:
        client = self._client or KubeClient(await self._load_access())
        self.pods, self.mds = (Informer(client, resource, self.namespace, self._dirty.set,
                                        watch_timeout_s=self.watch_timeout_s, resync_s=self.resync_interval_s,
                                        metrics=self.metrics)
                               for resource in (ENGINE_PODS, MODEL_DEPLOYMENTS))
        tasks = [asyncio.create_task(t, name=n) for t, n in ((self.pods.run(), "discovery-pods"),
                                                              (self.mds.run(), "discovery-mds"),
                                                              (self._publish_loop(), "discovery-publish"))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._client is None:  # ours: close it; an injected client belongs to the caller
                await client.close()
