"""One supernode-label rule (supernode.api.supernodes): the planner places by it and the builders pin pods
with it, also for an operator-wide `--supernode-label` other than the default."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from builders import make_inventory, make_md, make_node, make_plan, operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator

from supernode.api import constants as C
from supernode.api.supernodes import supernode_label_key
from supernode.operator import builders
from supernode.operator.planner import plan

CUSTOM = "example.com/superpod"  # an operator-wide label that is not the default
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("accelerator", "spec_label", "operator_label", "want"), [
    ("cpu", None, CUSTOM, None),
    ("ascend-910c", None, None, C.NODE_LABEL_ASCEND_SUPERPOD),
    ("ascend-910c", None, CUSTOM, CUSTOM),
    ("ascend-910c", "rack", CUSTOM, "rack"),
    ("nvidia-h200", None, CUSTOM, C.NODE_LABEL_NVIDIA_CLIQUE),  # the operator-wide label is Ascend's
    ("nvidia-h200", "rack", None, "rack"),
])
def test_label_key_rule(accelerator: str, spec_label: str | None, operator_label: str | None,
                        want: str | None) -> None:
    md = make_md("x").accelerator(accelerator, 0 if accelerator == "cpu" else 8)
    if spec_label:
        md = md.placement(label=spec_label)
    spec = md.obj().spec
    assert supernode_label_key(spec, operator_label) == want
    # The planner places by exactly this key: it is what the plan carries to the builders.
    assert plan(md.obj(), make_inventory().obj(), supernode_label=operator_label).supernode_label == want


def _affinity_keys(objs: list[dict]) -> set[str]:  # type: ignore[type-arg]
    terms = objs[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return {e["key"] for t in terms for e in t["matchExpressions"]}


def test_builders_render_the_operator_wide_label_the_planner_placed_by() -> None:
    inventory = make_inventory().add(*(make_node(f"n{i}").label(CUSTOM, f"p{i // 2}").ascend(16)
                                       for i in range(4))).obj()
    md = make_md("x").accelerator("ascend-910c", 16).group(pods=2).replicas(2).placement("Required").uid().obj()
    p = plan(md, inventory, supernode_label=CUSTOM)
    assert sorted(g.supernode or "" for g in p.groups) == ["p0", "p1"]
    for group in p.groups:
        objs = builders.group_objects(md, p, group, "r1", lws=False)
        assert _affinity_keys(objs) == {C.NODE_LABEL_HOSTNAME, CUSTOM}
        terms = objs[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
        assert {"key": CUSTOM, "operator": "In", "values": [group.supernode]} in terms


def test_builders_use_the_default_label_when_no_operator_label_is_set() -> None:
    md = operator_md().uid().engine("vllm").accelerator("ascend-910c", 16).parallelism(tensor=16, data=2).obj()
    p = make_plan(md, [["a", "b"]], ["sp-0"])
    objs = builders.group_objects(md, p, p.groups[0], "r1", lws=False)
    assert _affinity_keys(objs) == {C.NODE_LABEL_HOSTNAME, C.NODE_LABEL_ASCEND_SUPERPOD}


def test_no_component_keeps_its_own_copy_of_the_rule() -> None:
    """The default label keys are read by the rule in supernode.api only (the local runtime labels its one
    pretend node with both keys, which is data, not the rule)."""
    allowed = {REPO / "cli/supernode/cli/local/inventory.py"}
    for root in ("operator", "router", "engine", "cli"):
        for path in (REPO / root).rglob("*.py"):
            text = path.read_text()
            if path in allowed:
                continue
            for name in ("NODE_LABEL_ASCEND_SUPERPOD", "NODE_LABEL_NVIDIA_CLIQUE"):
                assert name not in text, f"{path.relative_to(REPO)} uses {name}: call supernode_label_key instead"


async def test_live_operator_with_a_non_default_supernode_label_gets_pods_scheduled(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    emu.declare(MD_KIND, shortnames=["md"])
    cluster = FakeCluster(emu)  # its scheduler honours the rendered node affinity
    await cluster.add_nodes(*(node(f"sp{sp}-n{i}", f"sp-{sp}", superpod_label=CUSTOM)
                              for sp in range(2) for i in range(2)))
    md = (operator_md("v4").engine("vllm").accelerator("ascend-910c", 16).parallelism(tensor=16, data=2, expert=32)
          .placement(supernode="Required").replicas(2).dict())
    mds = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/llm/{C.PLURAL}"
    async with cluster.running(), running_operator(url, supernode_label=CUSTOM), \
            httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(mds, json=md)).status_code == 201
        await eventually(lambda: (emu.get(C.PLURAL, "llm", "v4", C.GROUP) or {}).get("status", {}).get(
            "readyReplicas") == 2, what="2 ready groups on the custom-labelled supernodes")
    assert cluster.unschedulable == 0
    for sts in emu.objects_of("statefulsets", "apps", "llm"):
        assert _affinity_keys([sts]) == {C.NODE_LABEL_HOSTNAME, CUSTOM}
