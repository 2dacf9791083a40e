"""Mixed pools, pure parts: pool views, per-pool planning on separate node pools, a pool with no nodes
(CapacityLimited, the others unaffected), rendered objects (golden) and per-pool status.

Regenerate the golden with `SUPERNODE_UPDATE_GOLDEN=1 pytest tests/operator/test_mixed_pools.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import MDBuilder, make_inventory, make_node, operator_md

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_name, pool_views, total_replicas
from supernode.operator import builders, naming
from supernode.operator.observe import GroupState, PodState
from supernode.operator.planner import plan, plan_pools
from supernode.operator.pool_status import PoolFacts, combined_reasons
from supernode.operator.status import Facts, compute_status

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"


def mixed(ascend: int = 2, h200: int = 2) -> MDBuilder:
    """Ascend 910C pool (MindIE, inherited from the top level) + H200 pool (vLLM, its own everything)."""
    return (operator_md("v4").uid().engine("mindie").accelerator("ascend-910c", 16).parallelism(tensor=16)
            .placement(supernode="Required")
            .pool("ascend", replicas=ascend)
            .pool("h200", "nvidia-h200", 8, replicas=h200, parallelism={"tensor": 8}, capacityWeight=1.5,
                  engine={"type": "vllm", "image": "vllm/vllm-openai:v1", "args": ["--max-model-len", "65536"],
                          "maxConcurrency": 96}))


def fleet(h200_nodes: int = 2) -> Any:
    return (make_inventory().superpods(1, nodes=2)
            .add(*(make_node(f"h200-{i}").nvidia(8) for i in range(h200_nodes))).obj())


def test_a_spec_without_pools_is_its_own_single_unnamed_view() -> None:
    md = operator_md("v4").accelerator("ascend-910c", 16).replicas(3).obj()
    views = pool_views(md)
    assert [(v.name, v.md is md) for v in views] == [("", True)]
    assert pool_name(md) == "" and total_replicas(md) == 3


def test_each_pool_view_inherits_what_it_leaves_out_and_replaces_what_it_names() -> None:
    md = mixed().obj()
    ascend, h200 = pool_views(md)
    assert ascend.md.spec.engine.type.value == "mindie" and ascend.md.spec.accelerator.type.value == "ascend-910c"
    assert h200.md.spec.engine.type.value == "vllm" and h200.md.spec.engine.max_concurrency == 96
    assert h200.md.spec.accelerator.devices_per_pod == 8 and h200.md.spec.parallelism.tensor == 8
    assert h200.capacity_weight == 1.5 and total_replicas(md) == 4
    assert pool_views(h200.md)[0].md.spec == h200.md.spec  # a view of a view is the view
    assert naming.revision(ascend.md) != naming.revision(h200.md)
    with pytest.raises(ValueError, match="2 pools"):
        plan(md, fleet())  # a multi-pool deployment is planned one view at a time


def test_each_pool_is_placed_on_its_own_node_pool() -> None:
    ascend, h200 = plan_pools(mixed().obj(), fleet())
    assert (ascend.pool, h200.pool) == ("ascend", "h200")
    assert {p.node for g in ascend.groups for p in g.pods} == {"sp-0-n0", "sp-0-n1"}
    assert {p.node for g in h200.groups for p in g.pods} == {"h200-0", "h200-1"}
    assert ascend.resource_name == C.RESOURCE_ASCEND and h200.resource_name == C.RESOURCE_NVIDIA
    assert not ascend.capacity.limited and not h200.capacity.limited
    assert h200.groups[0].pods[0].env[C.ENV_POOL] == "h200"


def test_a_pool_without_matching_nodes_is_capacity_limited_and_the_others_are_not() -> None:
    ascend, h200 = plan_pools(mixed().obj(), fleet(h200_nodes=0))
    assert ascend.capacity.placeable == 2 and not ascend.capacity.limited
    assert h200.capacity.placeable == 0 and h200.capacity.limited
    assert any("no eligible node" in r or "no nvidia.com/gpu" in r for r in h200.capacity.reasons), h200.capacity


def test_two_pools_on_the_same_nodes_never_share_devices() -> None:
    md = (operator_md("v4").accelerator("ascend-910c", 16).parallelism(tensor=16)
          .pool("a", replicas=2).pool("b", replicas=2).obj())
    a, b = plan_pools(md, make_inventory().superpods(1, nodes=3).obj())
    used = [p.node for pl in (a, b) for g in pl.groups if g.placed for p in g.pods]
    assert len(used) == len(set(used)) == 3 and a.capacity.placeable == 2 and b.capacity.placeable == 1


def render_all(md: ModelDeployment) -> list[dict[str, Any]]:
    """What the operator renders: the one leader Service, then every placed group of every pool."""
    out = [builders.leader_service(md, lws=False)]
    for view, placed in zip(pool_views(md), plan_pools(md, fleet()), strict=True):
        for g in placed.groups:
            out += builders.group_objects(view.md, placed, g, naming.revision(view.md), lws=False)
    return out


def test_mixed_pool_manifests_match_golden() -> None:
    objs = render_all(mixed().obj())
    text = yaml.safe_dump_all(objs, sort_keys=True)
    path = GOLDEN / "mixed-pools-sts.yaml"
    if os.environ.get("SUPERNODE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), "mixed-pools-sts differs (SUPERNODE_UPDATE_GOLDEN=1 to accept)"
    sts = [o for o in objs if o["kind"] == "StatefulSet"]
    assert sorted(o["metadata"]["name"].rsplit("-", 1)[0] for o in sts) == [
        "v4-ascend-g0", "v4-ascend-g1", "v4-h200-g0", "v4-h200-g1"]
    for o in sts:
        pool = o["metadata"]["labels"][C.LABEL_POOL]
        assert o["spec"]["selector"]["matchLabels"][C.LABEL_POOL] == pool  # groups 0 of both pools stay apart
        notes = o["spec"]["template"]["metadata"]["annotations"]
        assert notes[C.ANNOTATION_CAPACITY_WEIGHT] == ("1.5" if pool == "h200" else "1")
        assert notes[C.ANNOTATION_MAX_CONCURRENCY] == ("96" if pool == "h200" else "32")
        volumes = {v["name"] for v in o["spec"]["template"]["spec"]["volumes"]}
        assert ("ranktable" in volumes) == (pool == "ascend")  # MindIE on Ascend reads a rank table


def group(pool: str, index: int, rev: str, *, ready: bool = True) -> GroupState:
    name = f"v4-{pool}-g{index}-{rev}"
    pod = PodState(name=f"{name}-0", group=index, revision=rev, rank=0, ready=ready, failed="", node="n")
    return GroupState(index=index, name=name, revision=rev, kind="StatefulSet",
                      expected_pods=1, pods=(pod,), draining=False, drain_started=None, restarts=0, last_restart=None,
                      failure_seen=None, supernode=None, nodes=(), annotations={}, pool=pool)


def test_status_reports_each_pool_and_names_the_limited_one() -> None:
    pools = (PoolFacts("ascend", "ascend-910c", 2, "ra", 2), PoolFacts("h200", "nvidia-h200", 2, "rh", 0,
                                                                       ("groups 0, 1: needs 1 pod; no eligible node",)))
    facts = Facts(generation=3, desired=4, revision="ascend=ra,h200=rh", selector="s", placeable=2,
                  capacity_reasons=combined_reasons(pools), pools=pools)
    status = compute_status([group("ascend", 0, "ra"), group("ascend", 1, "ra")], facts, None, "t")
    limited = next(c for c in status["conditions"] if c["type"] == C.COND_CAPACITY_LIMITED)
    assert limited["status"] == "True" and "pool h200: groups 0, 1" in limited["message"]
    assert "pool ascend" not in limited["message"]
    assert status["poolSummary"] == "ascend:2/2 h200:0/2"
    by_name = {p["name"]: p for p in status["pools"]}
    assert by_name["ascend"]["readyReplicas"] == 2 and not by_name["ascend"]["capacityLimited"]
    assert by_name["h200"]["capacityLimited"] and "no eligible node" in by_name["h200"]["message"]
    assert [g["pool"] for g in status["groups"]] == ["ascend", "ascend"]
    assert status["readyReplicas"] == 2 and status["updatedReplicas"] == 2  # each pool's own revision


def test_the_mixed_pool_example_plans_with_one_pool_short() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "v4-flash-mixed-pools.yaml").read_text())
    from supernode.operator.inventory import inventory_from_dict

    inventory = inventory_from_dict(yaml.safe_load(
        (ROOT / "examples" / "inventories" / "mixed-ascend-h200.yaml").read_text()))
    ascend, h200 = plan_pools(ModelDeployment.from_obj(doc), inventory)
    assert ascend.capacity.placeable == 2 and h200.capacity.placeable == 1 and h200.capacity.limited


def test_changing_one_pool_changes_only_that_pools_revision() -> None:
    before = [naming.revision(v.md) for v in pool_views(mixed().obj())]
    changed = mixed().dict()
    changed["spec"]["pools"][1]["engine"]["image"] = "vllm/vllm-openai:v2"
    changed["spec"]["pools"][0]["replicas"] = 5  # scaling is not a new revision either
    after = [naming.revision(v.md) for v in pool_views(ModelDeployment.from_obj(changed))]
    assert after[0] == before[0] and after[1] != before[1]  # only the h200 pool rolls
