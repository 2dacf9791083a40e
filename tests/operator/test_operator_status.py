"""Status computation and gang decisions (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from supernode.api import constants as C
from supernode.api.models import RecoverySpec
from supernode.operator.lifecycle import backoff, decide
from supernode.operator.observe import GroupState, PodState, group_states, pod_failure
from supernode.operator.status import Facts, compute_status


def pod(i: int, ready: bool = True, failed: str = "") -> PodState:
    return PodState(f"p{i}", 0, "r1", i, ready, failed, "n")


def group(index: int = 0, pods: tuple[PodState, ...] = (pod(0), pod(1)), draining: bool = False,
          restarts: int = 0, last: float | None = None, rev: str = "r1", seen: float | None = None) -> GroupState:
    return GroupState(index, f"g{index}", rev, "StatefulSet", 2, pods, draining, None, restarts, last, seen, "sp-0",
                      (), {})


FACTS = Facts(generation=3, desired=2, revision="r1", selector="s", placeable=2)


def conds(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_group_ready_only_when_every_pod_is() -> None:
    assert group().ready
    assert not group(pods=(pod(0), pod(1, ready=False))).ready
    assert not group(pods=(pod(0),)).ready


def test_status_counts_and_conditions() -> None:
    st = compute_status([group(0), group(1, pods=(pod(0), pod(1, ready=False)))], FACTS, None, "t0")
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"], st["placeableReplicas"]) == (2, 1, 2, 2)
    c = conds(st)
    assert c[C.COND_READY]["status"] == "False" and c[C.COND_READY]["message"] == "1/2 replica groups ready"
    assert c[C.COND_PROGRESSING]["status"] == "True" and c[C.COND_PROGRESSING]["reason"] == "GroupsStarting"
    assert st["observedGeneration"] == 3 and all(x["observedGeneration"] == 3 for x in st["conditions"])


def test_transition_time_kept_while_status_unchanged() -> None:
    first = compute_status([group(0), group(1)], FACTS, None, "t0")
    second = compute_status([group(0), group(1)], FACTS, first, "t1")
    assert all(c["lastTransitionTime"] == "t0" for c in second["conditions"])
    third = compute_status([group(0)], FACTS, second, "t2")
    assert conds(third)[C.COND_READY]["lastTransitionTime"] == "t2"


def test_capacity_limited_message_is_actionable() -> None:
    facts = Facts(generation=1, desired=3, revision="r1", selector="s", placeable=1,
                  capacity_reasons=("group 1: best supernode sp-0 has room for 0 pods",))
    c = conds(compute_status([group(0)], facts, None, "t"))[C.COND_CAPACITY_LIMITED]
    assert c["status"] == "True" and c["reason"] == "InsufficientCapacity"
    assert "1/3 groups placeable" in c["message"] and "lower spec.replicas" in c["message"]


def test_invalid_spec_is_degraded_and_names_the_field() -> None:
    facts = Facts(generation=1, desired=0, revision="", selector="s", placeable=0, invalid="spec.engine.type: bad")
    c = conds(compute_status([], facts, None, "t"))
    assert c[C.COND_DEGRADED]["status"] == "True" and c[C.COND_DEGRADED]["reason"] == "InvalidSpec"
    assert c[C.COND_DEGRADED]["message"] == "spec.engine.type: bad"


def test_draining_groups_do_not_count_as_replicas() -> None:
    st = compute_status([group(0), group(1), group(1, draining=True, rev="r0")], FACTS, None, "t")
    assert st["replicas"] == 2 and conds(st)[C.COND_PROGRESSING]["status"] == "True"
    assert [g["phase"] for g in st["groups"]] == ["Ready", "Ready", "Draining"]


RECOVERY = RecoverySpec(max_group_restarts=3, backoff_seconds=10, max_backoff_seconds=25)


def test_exponential_backoff_is_capped_and_the_first_restart_waits_too() -> None:
    assert [backoff(RECOVERY, n) for n in range(5)] == [10.0, 20.0, 25.0, 25.0, 25.0]


FAILED = (pod(0), pod(1, ready=False, failed="CrashLoopBackOff"))


@pytest.mark.parametrize(("case", "g", "action", "retry_in"), [
    ("a healthy group is left alone", group(), "none", 0),
    ("a first failure is stamped, not restarted at once", group(pods=FAILED), "mark", 10),
    ("the first restart waits backoffSeconds from the stamp", group(pods=FAILED, seen=95), "wait", 5),
    ("then restarts", group(pods=FAILED, seen=90), "restart", 0),
    ("restart 3 waits 2 doublings, capped", group(pods=FAILED, restarts=2, seen=80), "wait", 5),
    ("and restarts once the capped delay passed", group(pods=FAILED, restarts=2, seen=75), "restart", 0),
    ("a stamp whose failure went away is cleared", group(seen=50), "clear", 0),
    ("a draining group is never restarted", group(pods=FAILED, draining=True), "none", 0),
])
def test_gang_decision(case: str, g: GroupState, action: str, retry_in: float) -> None:
    out = decide(g, RECOVERY, 100)
    assert (out.action, out.retry_in) == (action, retry_in), case


def test_a_spent_budget_is_exhausted_with_the_failure_named() -> None:
    out = decide(group(pods=FAILED, restarts=3, seen=0), RECOVERY, 100)
    assert out.action == "exhausted" and "CrashLoopBackOff" in out.reason


def test_pod_failure_reasons() -> None:
    crash = {"status": {"containerStatuses": [{"name": "engine", "restartCount": 2,
                                               "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    assert "CrashLoopBackOff" in pod_failure(crash)
    assert pod_failure({"status": {"phase": "Failed", "reason": "UnexpectedAdmissionError"}})
    assert pod_failure({"status": {"phase": "Running"}, "spec": {"nodeName": "n1"}}, frozenset({"n1"})) == \
        "node n1 lost"
    assert pod_failure({"status": {"phase": "Running"}}) == ""


def test_group_states_match_pods_by_group_and_revision() -> None:
    sts = {"kind": "StatefulSet", "metadata": {"name": "md-g0-r1", "labels": {C.LABEL_GROUP: "0",
           C.LABEL_REVISION: "r1"}, "annotations": {C.ANNOTATION_RESTARTS: "2"}}, "spec": {"replicas": 2}}
    pods = [{"metadata": {"name": f"md-g0-r1-{i}", "labels": {C.LABEL_GROUP: "0", C.LABEL_REVISION: rev,
                                                               "apps.kubernetes.io/pod-index": str(i)}},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}} for i, rev in ((0, "r1"), (1, "r0"))]
    (state,) = group_states([sts], pods)
    assert state.restarts == 2 and [p.rank for p in state.pods] == [0] and not state.ready


def test_status_matches_the_api_status_model() -> None:
    from supernode.api.models import ModelDeploymentStatus

    st = compute_status([group(0), group(1, draining=True, rev="r0")], FACTS, None, "2026-01-01T00:00:00Z")
    parsed = ModelDeploymentStatus.model_validate(st)
    assert parsed.ready_replicas == 1 and parsed.groups[1].phase == "Draining"


def _problem(mutate: Callable[[dict[str, Any]], None]) -> str:
    from builders import operator_md
    from pydantic import ValidationError

    from supernode.api.models import ModelDeployment
    from supernode.operator.reconcile import spec_error

    obj = operator_md().uid().engine("vllm").accelerator("ascend-910c", 16).parallelism(tensor=16).dict()
    mutate(obj)
    try:
        ModelDeployment.from_obj(obj)
    except ValidationError as exc:
        return spec_error(exc)
    return ""


def test_bad_input_names_the_field() -> None:
    assert _problem(lambda o: o["spec"]["engine"].update(type="tensorrt")).startswith("spec.engine.type:")
    assert _problem(lambda o: o["spec"]["model"].pop("source")).startswith("spec.model.source:")
    assert _problem(lambda o: o["spec"]["parallelism"].update(tensor=0)).startswith("spec.parallelism.tensor:")
    assert _problem(lambda o: o["spec"].update(replicas=-1)).startswith("spec.replicas:")
    impossible = _problem(lambda o: o["spec"]["parallelism"].update(tensor=24))
    assert impossible.startswith("spec.parallelism: tensor x pipeline x data must be a multiple"), impossible
