"""Observed state of a deployment's replica groups, from its workloads and pods (pure)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C
from supernode.operator import naming as N

FAILED_REASONS = frozenset({"CrashLoopBackOff", "Error", "ImagePullBackOff", "ErrImagePull",
                            "CreateContainerConfigError", "RunContainerError"})
# Pod-level reasons that mean the pod will not come back by itself (node lost, device unhealthy).
LOST_REASONS = frozenset({"NodeLost", "Evicted", "UnexpectedAdmissionError", "Terminated", "NodeAffinity",
                          "OutOfnvidia.com/gpu", "OutOfhuawei.com/Ascend910"})


@dataclass(frozen=True, slots=True)
class PodState:
    name: str
    group: int
    revision: str
    rank: int
    ready: bool
    failed: str  # why it failed ("" when it did not)
    node: str | None


@dataclass(frozen=True, slots=True)
class GroupState:
    index: int
    name: str
    revision: str
    kind: str  # StatefulSet | LeaderWorkerSet
    expected_pods: int
    pods: tuple[PodState, ...]
    draining: bool
    drain_started: float | None  # unix time
    restarts: int
    last_restart: float | None
    failure_seen: float | None  # when the operator first saw the current failure (back-off counts from it)
    supernode: str | None
    nodes: tuple[str, ...]  # the binding rendered into its affinity
    annotations: Mapping[str, str]
    pool: str = ""  # its pool ("" without spec.pools)

    @property
    def ready_pods(self) -> int:
        return sum(p.ready for p in self.pods)

    @property
    def ready(self) -> bool:
        """Gang readiness: every pod of the group exists and is ready."""
        return len(self.pods) >= self.expected_pods and all(p.ready for p in self.pods)

    @property
    def failure(self) -> str:
        return next((f"pod {p.name}: {p.failed}" for p in self.pods if p.failed), "")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(ts: float, *, precise: bool = False) -> str:
    """RFC 3339 in UTC; `precise`: with microseconds (back-off stamps of a second or two)."""
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ")


def pod_failure(pod: Mapping[str, Any], lost_nodes: frozenset[str] = frozenset()) -> str:
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return f"phase Failed ({status.get('reason') or 'no reason'})"
    if status.get("reason") in LOST_REASONS:
        return str(status["reason"])
    node = (pod.get("spec") or {}).get("nodeName")
    if node and node in lost_nodes:
        return f"node {node} lost"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILED_REASONS and (cs.get("restartCount", 0) > 0 or "Image" in waiting["reason"]):
            return f"container {cs.get('name')}: {waiting['reason']} (restarts {cs.get('restartCount', 0)})"
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            return f"container {cs.get('name')} exited {terminated.get('exitCode')} ({terminated.get('reason')})"
    return ""


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_rank(pod: Mapping[str, Any]) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    raw = labels.get(N.POD_INDEX_LABEL) or labels.get(N.LWS_WORKER_INDEX_LABEL)
    if raw is None:
        raw = str(pod.get("metadata", {}).get("name", "")).rpartition("-")[2]
    return int(raw) if str(raw).isdigit() else 0


def pod_state(pod: Mapping[str, Any], lost_nodes: frozenset[str]) -> PodState | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    group = labels.get(C.LABEL_GROUP, "")
    if not group.isdigit():
        return None
    return PodState(name=pod["metadata"]["name"], group=int(group), revision=labels.get(C.LABEL_REVISION, ""),
                    rank=pod_rank(pod), ready=pod_ready(pod), failed=pod_failure(pod, lost_nodes),
                    node=(pod.get("spec") or {}).get("nodeName"))


def _bound_nodes(workload: Mapping[str, Any]) -> tuple[str, ...]:
    spec = workload.get("spec") or {}
    template = spec.get("template") or (spec.get("leaderWorkerTemplate") or {}).get("workerTemplate") or {}
    terms = (((template.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    for term in terms:
        for expr in term.get("matchExpressions", []):
            if expr.get("key") == C.NODE_LABEL_HOSTNAME:
                return tuple(expr.get("values", []))
    return ()


def group_states(workloads: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                 lost_nodes: frozenset[str] = frozenset()) -> list[GroupState]:
    states = [s for p in pods if (s := pod_state(p, lost_nodes))]
    out: list[GroupState] = []
    for w in workloads:
        meta = w["metadata"]
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        if not str(labels.get(C.LABEL_GROUP, "")).isdigit():
            continue
        index, rev = int(labels[C.LABEL_GROUP]), labels.get(C.LABEL_REVISION, "")
        spec = w.get("spec") or {}
        expected = spec.get("replicas", 1) if w["kind"] == "StatefulSet" else (
            spec.get("leaderWorkerTemplate") or {}).get("size", 1)
        mine = tuple(sorted((p for p in states if p.group == index and p.revision == rev), key=lambda p: p.rank))
        out.append(GroupState(
            index=index, name=meta["name"], revision=rev, kind=w["kind"], expected_pods=int(expected), pods=mine,
            draining=notes.get(C.ANNOTATION_DRAINING) == "true",
            drain_started=parse_time(notes.get(C.ANNOTATION_DRAIN_STARTED)),
            restarts=int(notes.get(C.ANNOTATION_RESTARTS, "0") or 0),
            last_restart=parse_time(notes.get(C.ANNOTATION_LAST_RESTART)),
            failure_seen=parse_time(notes.get(C.ANNOTATION_FAILURE_SEEN)),
            supernode=notes.get(C.LABEL_SUPERNODE), nodes=_bound_nodes(w), annotations=dict(notes),
            pool=N.pool_of(w)))
    return sorted(out, key=lambda g: (g.index, g.name))
