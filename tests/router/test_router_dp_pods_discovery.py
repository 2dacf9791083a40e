"""Data-parallel ranks spread over a group's pods (vLLM multi-node data parallel, SGLang DP attention over
nodes): discovery reads every pod of the group and maps each rank's publisher to the pod that runs it;
a rank whose pod is not ready yet has no feed, and the endpoint stays approximate until it has."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from builders import MDBuilder, make_plan, operator_md

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.operator import builders, naming
from supernode.router.discovery.kubernetes import endpoints_from_objects
from supernode.router.kv_events.feeds import feed_plan
from supernode.router.routing.state import EndpointState

IPS = ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13"]


def group_pods(md: MDBuilder, *, lws: bool, ready: tuple[bool, ...] = (), group: str = "0") -> list[dict[str, Any]]:
    """The pods the StatefulSet / LeaderWorkerSet controller makes from the operator's templates, in order."""
    obj = md.obj()
    n = obj.spec.pods_per_group
    objs = builders.desired_objects(obj, make_plan(obj, [[f"n{i}" for i in range(n)]]), naming.revision(obj), lws=lws)
    work = next(o for o in objs if o["kind"] in ("StatefulSet", "LeaderWorkerSet"))
    pods = []
    for i in range(n):
        if lws:
            t = work["spec"]["leaderWorkerTemplate"]["leaderTemplate" if i == 0 else "workerTemplate"]
            index_label = {C.LWS_WORKER_INDEX_LABEL: str(i)}
        else:
            t = work["spec"]["template"]
            index_label = {C.POD_INDEX_LABEL: str(i)}
        labels = {**t["metadata"]["labels"], **index_label, C.LABEL_GROUP: group}
        if i == 0:
            labels[C.LABEL_ROLE] = C.ROLE_LEADER  # the operator labels rank 0 (StatefulSet) / LWS renders it
        ok = ready[i] if i < len(ready) else True
        status = {"phase": "Running", "podIP": IPS[i],
                  "conditions": [{"type": "Ready", "status": "True" if ok else "False"}]}
        pods.append({"metadata": {"name": f"g{group}-{i}", "namespace": "llm", "labels": labels,
                                  "annotations": copy.deepcopy(t["metadata"]["annotations"])},
                     "spec": copy.deepcopy(t["spec"]), "status": status})
    return pods


def spread(engine: str = "vllm", tensor: int = 8, data: int = 2) -> MDBuilder:
    return (operator_md().engine(engine).kv_events(port=6000, replayPort=6100).accelerator("nvidia-h200", 8)
            .parallelism(tensor=tensor, data=data))


def only(endpoints: list[Endpoint]) -> Endpoint:
    assert len(endpoints) == 1, endpoints
    return endpoints[0]


@pytest.mark.parametrize("lws", [False, True])
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_each_rank_is_followed_on_the_pod_that_runs_it(engine: str, lws: bool) -> None:
    # DP 4 over two pods, two ranks each: ranks 2 and 3 publish from the worker pod, on ports + 2 and + 3.
    ep = only(endpoints_from_objects(group_pods(spread(engine, tensor=4, data=4), lws=lws), []))
    assert ep.url == "http://10.0.0.10:8000" and ep.data_parallel_size == 4
    assert ep.rank_kv_events == ["tcp://10.0.0.10:6000", "tcp://10.0.0.10:6001",
                                 "tcp://10.0.0.11:6002", "tcp://10.0.0.11:6003"]
    assert ep.rank_kv_events_replay == ["tcp://10.0.0.10:6100", "tcp://10.0.0.10:6101",
                                        "tcp://10.0.0.11:6102", "tcp://10.0.0.11:6103"]
    plan = feed_plan(EndpointState(ep), True)
    assert [src[:2] for src in plan.values()] == list(zip(ep.rank_kv_events, ep.rank_kv_events_replay, strict=True))


def test_sixteen_ranks_over_four_pods() -> None:
    ep = only(endpoints_from_objects(group_pods(spread(tensor=2, data=16), lws=True), []))
    assert ep.rank_kv_events == [f"tcp://{IPS[r // 4]}:{6000 + r}" for r in range(16)]


def test_a_worker_pod_not_ready_leaves_its_ranks_without_a_feed() -> None:
    pods = group_pods(spread(tensor=8, data=2), lws=False, ready=(True, False))
    ep = only(endpoints_from_objects(pods, []))
    assert ep.rank_kv_events == ["tcp://10.0.0.10:6000", ""]
    assert ep.rank_kv_events_replay == ["tcp://10.0.0.10:6100", ""]
    assert [src[0] for src in feed_plan(EndpointState(ep), True).values()] == ["tcp://10.0.0.10:6000", "none"]
    without = only(endpoints_from_objects(pods[:1], []))  # not created yet: the same
    assert without.rank_kv_events == ["tcp://10.0.0.10:6000", ""]
    pods[1]["status"]["conditions"][0]["status"] = "True"
    assert only(endpoints_from_objects(pods, [])).rank_kv_events == ["tcp://10.0.0.10:6000", "tcp://10.0.0.11:6001"]


def test_workers_of_other_groups_are_not_mixed_in() -> None:
    a = group_pods(spread(), lws=False, group="0")
    b = group_pods(spread(), lws=False, group="1")
    b[1]["status"]["podIP"] = "10.0.9.9"
    eps = endpoints_from_objects([a[0], b[1]], [])  # group 0 without its worker, group 1 without its leader
    assert [e.rank_kv_events for e in eps] == [["tcp://10.0.0.10:6000", ""]]


def test_groups_in_one_pod_keep_the_offset_ports() -> None:
    # One pod (or a leader from before the annotation): no per-rank list, rank r on the leader's ports + r.
    pods = group_pods(spread(tensor=2, data=4), lws=False)
    assert len(pods) == 1
    ep = only(endpoints_from_objects(pods, []))
    assert ep.data_parallel_size == 4 and ep.rank_kv_events == []
    assert [src[0] for src in feed_plan(EndpointState(ep), True).values()] == [
        f"tcp://10.0.0.10:{6000 + r}" for r in range(4)]


def test_rank_lists_must_match_the_ranks() -> None:
    with pytest.raises(ValueError, match="rankKvEvents"):
        Endpoint(url="http://x:1", model="m", kv_events="tcp://x:1", data_parallel_size=2, rank_kv_events=["tcp://x:1"])
    with pytest.raises(ValueError, match="tcp://"):
        Endpoint(url="http://x:1", model="m", data_parallel_size=2, rank_kv_events=["zmq://x:1", ""])
