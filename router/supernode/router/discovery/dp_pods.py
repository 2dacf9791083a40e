"""Data-parallel ranks spread over the pods of one group: which pod publishes each rank's KV events.

vLLM's multi-node data parallel (and SGLang's DP attention over several nodes) run ``data / pods`` ranks
on each pod, pod i the ranks ``i * local`` .. ``i * local + local - 1``; every rank binds its KV event
sockets on its own pod with the configured ports plus its *global* rank (vLLM's scheduler hands the
publisher ``parallel_config.data_parallel_rank``, SGLang's its ``attn_dp_rank``). The operator writes
``local`` on every pod (C.ANNOTATION_DP_LOCAL) and names every rank's ports in the shared template, so
the router finds rank r at the IP of pod ``r // local`` on the port named ``kv_port_name(..., r)``.
Requests still go to the leader's HTTP server, which hands them to any rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from supernode.api import constants as C

Pod = Mapping[str, Any]
GroupKey = tuple[str, str, str, str, str]


def _labels(pod: Pod) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def group_key(pod: Pod) -> GroupKey:
    """The pods of one replica group share namespace, deployment, pool, group index and revision."""
    labels = _labels(pod)
    return ((pod.get("metadata") or {}).get("namespace") or "", labels.get(C.LABEL_DEPLOYMENT, ""),
            labels.get(C.LABEL_POOL, ""), labels.get(C.LABEL_GROUP, ""), labels.get(C.LABEL_REVISION, ""))


def pod_index(pod: Pod) -> int | None:
    """The pod's place in its group (StatefulSet pod index or LeaderWorkerSet worker index); None if unknown."""
    labels = _labels(pod)
    raw = labels.get(C.POD_INDEX_LABEL) or labels.get(C.LWS_WORKER_INDEX_LABEL)
    return int(raw) if raw is not None and str(raw).isdigit() else None


def group_members(pods: Sequence[Pod]) -> dict[GroupKey, dict[int, Pod]]:
    """Group → pod index → pod, for the pods whose index is known."""
    out: dict[GroupKey, dict[int, Pod]] = {}
    for pod in pods:
        index = pod_index(pod)
        if index is not None:
            out.setdefault(group_key(pod), {})[index] = pod
    return out


def ranks_per_pod(pod: Pod) -> int | None:
    """C.ANNOTATION_DP_LOCAL of a pod (None when absent or not a positive number)."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(C.ANNOTATION_DP_LOCAL, "")
    return int(raw) if str(raw).isdigit() and int(raw) > 0 else None


def rank_publishers(leader: Pod, members: Mapping[int, Pod], ranks: int, *,
                    named_port: Callable[[Pod, str], int | None], ready: Callable[[Pod], bool],
                    host: Callable[[str], str]) -> tuple[list[str], list[str]] | None:
    """(PUB, replay) address of every rank of a group whose ranks span pods, '' for a rank whose pod is
    missing, not ready or has no IP yet (that rank has no feed until it is); None when every rank runs
    on the leader (rank r then publishes on the leader's rank-0 ports + r, no list needed)."""
    local = ranks_per_pod(leader)
    if local is None or local >= ranks:
        return None
    pubs: list[str] = []
    replays: list[str] = []
    for r in range(ranks):
        index = r // local
        pod = leader if index == 0 else members.get(index)
        ip = ((pod or {}).get("status") or {}).get("podIP")
        pub = named_port(pod, C.kv_port_name(C.PORT_KV_EVENTS, r)) if pod is not None else None
        if pod is None or not ip or pub is None or (index > 0 and not ready(pod)):
            pubs.append("")
            replays.append("")
            continue
        replay = named_port(pod, C.kv_port_name(C.PORT_KV_REPLAY, r))
        pubs.append(f"tcp://{host(ip)}:{pub}")
        replays.append(f"tcp://{host(ip)}:{replay}" if replay else "")
    return pubs, replays
