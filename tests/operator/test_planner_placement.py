"""Planner table tests: each case name reads like the rule it proves."""

from __future__ import annotations

import random

from builders import make_inventory, make_md, make_node

from supernode.api import constants as C
from supernode.operator.planner import apply_plan, bindings, plan
from supernode.operator.types import Inventory, Plan

ASCEND = C.RESOURCE_ASCEND


def v4_pro(replicas: int = 1, policy: str = "Required", spread: bool = True):  # type: ignore[no-untyped-def]
    return make_md("v4-pro").replicas(replicas).accelerator("ascend-910c", 16).group(pods=2) \
        .placement(policy, spread=spread)


def nodes_of(p: Plan, group: int) -> list[str | None]:
    return [pod.node for pod in p.groups[group].pods]


def supernode_of(inventory: Inventory, node: str | None) -> str | None:
    return next(n.labels.get(C.NODE_LABEL_ASCEND_SUPERPOD) for n in inventory.nodes if n.name == node)


def test_fits_in_one_supernode() -> None:
    inventory = make_inventory().superpods(3, nodes=4).obj()
    p = plan(v4_pro().obj(), inventory)
    assert p.capacity.placeable == 1 and not p.capacity.limited
    group = p.groups[0]
    assert group.placed and group.supernode is not None
    assert {supernode_of(inventory, n) for n in nodes_of(p, 0)} == {group.supernode}
    assert len(set(nodes_of(p, 0))) == 2, "one 16-device pod per 16-device node"
    assert [pod.role for pod in group.pods] == [C.ROLE_LEADER, C.ROLE_WORKER]


def test_spreads_three_groups_over_three_supernodes() -> None:
    p = plan(v4_pro(3).obj(), make_inventory().superpods(3, nodes=4).obj())
    assert sorted(g.supernode for g in p.groups) == ["sp-0", "sp-1", "sp-2"]  # type: ignore[type-var]


def test_packs_groups_into_one_supernode_when_spreading_is_off() -> None:
    p = plan(v4_pro(2, spread=False).obj(), make_inventory().superpods(3, nodes=4).obj())
    assert p.groups[0].supernode == p.groups[1].supernode


def test_refuses_to_split_a_group_across_supernodes_when_required() -> None:
    inventory = make_inventory().add(
        make_node("sp-0-n0").superpod("sp-0").ascend(16),
        make_node("sp-0-n1").superpod("sp-0").ascend(16, used=16),
        make_node("sp-1-n0").superpod("sp-1").ascend(16),
    ).obj()
    p = plan(v4_pro().obj(), inventory)
    assert not p.groups[0].placed and p.capacity.placeable == 0
    assert p.groups[0].reason == (
        "needs 2 pods x 16 huawei.com/Ascend910 in one supernode; best supernode sp-0 has room for 1 pod")
    assert all(pod.node is None for pod in p.groups[0].pods)


def test_preferred_spans_supernodes_only_when_no_single_one_has_room() -> None:
    inventory = make_inventory().add(
        make_node("sp-0-n0").superpod("sp-0").ascend(16),
        make_node("sp-1-n0").superpod("sp-1").ascend(16),
    ).obj()
    p = plan(v4_pro(policy="Preferred").obj(), inventory)
    assert p.groups[0].placed and p.groups[0].supernode is None
    assert p.groups[0].supernodes == ("sp-0", "sp-1")
    roomy = make_inventory().add(*inventory.nodes, make_node("sp-2-n0").superpod("sp-2").ascend(16),
                                 make_node("sp-2-n1").superpod("sp-2").ascend(16)).obj()
    assert plan(v4_pro(policy="Preferred").obj(), roomy).groups[0].supernode == "sp-2"


def test_reports_capacity_limited_with_the_shortfall() -> None:
    p = plan(v4_pro(4).obj(), make_inventory().superpods(3, nodes=2).obj())
    assert p.capacity.desired == 4 and p.capacity.placeable == 3 and p.capacity.limited
    assert [g.placed for g in p.groups] == [True, True, True, False]
    assert p.capacity.reasons == (
        "group 3: needs 2 pods x 16 huawei.com/Ascend910 in one supernode; best supernode sp-0 has room for 0 pods",)


def test_several_unplaced_groups_share_one_reason_line() -> None:
    p = plan(v4_pro(5).obj(), make_inventory().superpods(2, nodes=2).obj())
    assert p.capacity.placeable == 2
    assert len(p.capacity.reasons) == 1 and p.capacity.reasons[0].startswith("groups 2, 3, 4: needs 2 pods")


def test_stable_when_scaling_from_2_to_3() -> None:
    inventory = make_inventory().superpods(3, nodes=4).obj()
    two = plan(v4_pro(2).obj(), inventory)
    three = plan(v4_pro(3).obj(), inventory, existing=bindings(two))
    assert [nodes_of(three, g) for g in (0, 1)] == [nodes_of(two, g) for g in (0, 1)]
    assert [g.kept for g in three.groups] == [True, True, False]
    assert three.groups[2].supernode not in {two.groups[0].supernode, two.groups[1].supernode}
    fresh = plan(v4_pro(3).obj(), inventory)
    assert [nodes_of(fresh, g) for g in (0, 1)] == [nodes_of(two, g) for g in (0, 1)], "plans are prefix-stable"


def test_existing_groups_keep_their_nodes_even_where_the_planner_would_choose_otherwise() -> None:
    inventory = make_inventory().superpods(3, nodes=4).obj()
    existing = {0: ("sp-2-n3", "sp-2-n1")}
    p = plan(v4_pro(2).obj(), inventory, existing=existing)
    assert nodes_of(p, 0) == ["sp-2-n3", "sp-2-n1"] and p.groups[0].kept
    assert p.groups[1].supernode != "sp-2", "the new group spreads away from the kept one"


def test_an_existing_group_on_a_vanished_node_is_re_placed_with_a_note() -> None:
    inventory = make_inventory().superpods(2, nodes=2).obj()
    p = plan(v4_pro(1).obj(), inventory, existing={0: ("gone-0", "sp-0-n0"), 7: ("sp-1-n0", "sp-1-n1")})
    assert p.groups[0].placed and not p.groups[0].kept
    assert "group 0: re-placed, node gone-0 is gone" in p.notes
    assert len(p.groups) == 1, "bindings of groups beyond replicas (scale-down) are dropped"


def test_never_over_commits_devices_held_by_others() -> None:
    inventory = make_inventory().add(
        make_node("a").superpod("sp").ascend(16, used=8),
        make_node("b").superpod("sp").ascend(16, used=1),
    ).obj()
    md = make_md("x").accelerator("ascend-910c", 8).group(pods=1).replicas(3).placement("Required").obj()
    p = plan(md, inventory)
    assert p.capacity.placeable == 2, "a: 8 free = 1 pod, b: 15 free = 1 pod"
    assert sorted(nodes_of(p, 0) + nodes_of(p, 1)) == ["a", "b"]
    after = apply_plan(inventory, p)
    assert {n.name: n.used[ASCEND] for n in after.nodes} == {"a": 16, "b": 9}


def test_cpu_groups_need_no_devices() -> None:
    md = make_md("tiny").accelerator("cpu").parallelism(tensor=2).replicas(2).obj()
    p = plan(md, make_inventory().cpu_nodes(1).obj())
    assert p.resource_name is None and p.capacity.placeable == 2
    for group in p.groups:
        assert [pod.node for pod in group.pods] == ["cpu-0", "cpu-0"]
        assert all(pod.devices == 0 for pod in group.pods)
        env = group.pods[0].env
        assert env[C.ENV_DEVICE] == "cpu" and C.ENV_CUDA_VISIBLE_DEVICES not in env
        assert C.ENV_ASCEND_VISIBLE_DEVICES not in env and C.ENV_SUPERNODE_ID not in env


def test_cpu_groups_spread_over_nodes() -> None:
    md = make_md("tiny").accelerator("cpu").parallelism(tensor=2).replicas(3).obj()
    p = plan(md, make_inventory().cpu_nodes(3).obj())
    assert sorted({pod.node for g in p.groups for pod in g.pods}) == ["cpu-0", "cpu-1", "cpu-2"]


def test_respects_taints_unless_tolerated() -> None:
    inventory = make_inventory().add(
        make_node("tainted").superpod("sp-0").ascend(16).taint("dedicated", "batch"),
        make_node("soft").superpod("sp-1").ascend(16).taint("hint", effect="PreferNoSchedule"),
    ).obj()
    md = make_md("x").accelerator("ascend-910b", 16).replicas(2).placement("Required")
    p = plan(md.obj(), inventory)
    assert [nodes_of(p, g) for g in (0, 1)] == [["soft"], [None]]
    assert "1 of 2 nodes excluded: 1 taint dedicated=batch:NoSchedule not tolerated" in p.notes
    assert p.capacity.reasons[-1] == p.notes[0]
    tolerated = plan(md.tolerate("dedicated", "batch", "NoSchedule").obj(), inventory)
    assert tolerated.capacity.placeable == 2
    exists_all = plan(make_md("y").accelerator("ascend-910b", 16).replicas(2).tolerate(None).obj(), inventory)
    assert exists_all.capacity.placeable == 2


def test_respects_node_selector() -> None:
    inventory = make_inventory().add(
        make_node("a").superpod("sp-0").ascend(16).label("pool", "prod"),
        make_node("b").superpod("sp-1").ascend(16).label("pool", "dev"),
    ).obj()
    md = make_md("x").accelerator("ascend-910c", 16).replicas(2).node_selector({"pool": "prod"}).obj()
    p = plan(md, inventory)
    assert nodes_of(p, 0) == ["a"] and not p.groups[1].placed
    assert "1 of 2 nodes excluded: 1 nodeSelector pool=prod not matched" in p.notes


def test_skips_nodes_that_are_not_ready_or_cordoned() -> None:
    inventory = make_inventory().add(
        make_node("down").superpod("sp").ascend(16).not_ready(),
        make_node("drained").superpod("sp").ascend(16).cordoned(),
        make_node("up").superpod("sp").ascend(16),
    ).obj()
    p = plan(make_md("x").accelerator("ascend-910c", 16).replicas(2).obj(), inventory)
    assert nodes_of(p, 0) == ["up"] and not p.groups[1].placed
    assert "2 of 3 nodes excluded: 1 cordoned, 1 not ready" in p.notes


def test_nvidia_groups_stay_inside_one_nvlink_clique() -> None:
    inventory = make_inventory().add(
        *(make_node(f"gb-{c}-{i}").clique(f"clique-{c}").nvidia(4) for c in range(2) for i in range(3)),
    ).obj()
    md = make_md("x").accelerator("nvidia-b200", 4).group(pods=3).replicas(2).placement("Required").obj()
    p = plan(md, inventory)
    assert p.supernode_label == C.NODE_LABEL_NVIDIA_CLIQUE
    assert sorted(g.supernode for g in p.groups) == ["clique-0", "clique-1"]  # type: ignore[type-var]
    assert {n for n in nodes_of(p, 0) if n} == {f"gb-{p.groups[0].supernode[-1]}-{i}" for i in range(3)}  # type: ignore[index]


def test_nodes_of_another_gpu_product_are_not_used() -> None:
    inventory = make_inventory().add(make_node("h100").nvidia(8, product="NVIDIA-H100-80GB-HBM3"),
                                     make_node("h200").nvidia(8, product="NVIDIA-H200")).obj()
    p = plan(make_md("x").accelerator("nvidia-h200", 8).replicas(2).obj(), inventory)
    assert nodes_of(p, 0) == ["h200"] and not p.groups[1].placed


def test_a_node_without_a_supernode_label_is_a_supernode_of_one() -> None:
    inventory = make_inventory().add(make_node("big").nvidia(8), make_node("small").nvidia(4)).obj()
    two_pods = make_md("x").accelerator("nvidia-h200", 4).group(pods=2).placement("Required")
    assert nodes_of(plan(two_pods.obj(), inventory), 0) == ["big", "big"]
    three_pods = make_md("x").accelerator("nvidia-h200", 4).group(pods=3).placement("Required").obj()
    p = plan(three_pods, inventory)
    assert p.groups[0].reason.endswith("best node big (no supernode label) has room for 2 pods")


def test_supernode_label_override_from_spec_and_from_operator_setting() -> None:
    inventory = make_inventory().add(
        *(make_node(f"n{i}").label("pod-id", f"p{i % 2}").label("rack", "r0").ascend(16) for i in range(4))).obj()
    md = make_md("x").accelerator("ascend-910c", 16).group(pods=2).replicas(2).placement("Required")
    by_operator = plan(md.obj(), inventory, supernode_label="pod-id")
    assert by_operator.supernode_label == "pod-id"
    assert sorted(g.supernode for g in by_operator.groups) == ["p0", "p1"]  # type: ignore[type-var]
    by_spec = plan(md.placement(label="rack").obj(), inventory, supernode_label="pod-id")
    assert by_spec.supernode_label == "rack" and by_spec.groups[0].supernode == "r0"
    assert not by_spec.groups[1].placed or by_spec.groups[1].supernode == "r0"


def test_resource_name_override() -> None:
    inventory = make_inventory().add(make_node("a").devices("huawei.com/ascend-1980", 16)).obj()
    md = make_md("x").accelerator("ascend-910b", 16, resource_name="huawei.com/ascend-1980").obj()
    p = plan(md, inventory)
    assert p.resource_name == "huawei.com/ascend-1980" and nodes_of(p, 0) == ["a"]


def test_every_rank_gets_the_env_its_distributed_world_needs() -> None:
    md = make_md("v4-pro").model("deepseek-v4-pro").accelerator("ascend-910c", 16) \
        .parallelism(tensor=16, data=2, expert=32).obj()
    p = plan(md, make_inventory().superpods(1, nodes=2).obj())
    for rank, pod in enumerate(p.groups[0].pods):
        env = pod.env
        assert env[C.ENV_RANK] == str(rank) and env[C.ENV_WORLD_SIZE] == "2"
        assert env[C.ENV_LEADER_ADDR] == C.LEADER_ADDR_PLACEHOLDER
        assert (env[C.ENV_TENSOR_PARALLEL], env[C.ENV_DATA_PARALLEL], env[C.ENV_EXPERT_PARALLEL],
                env[C.ENV_PIPELINE_PARALLEL]) == ("16", "2", "32", "1")
        assert env[C.ENV_ASCEND_VISIBLE_DEVICES] == ",".join(map(str, range(16)))
        assert env[C.ENV_SUPERNODE_ID] == "sp-0" and env[C.ENV_DEVICE] == "npu"
        assert env[C.ENV_GROUP] == "0" and env[C.ENV_DEPLOYMENT] == "v4-pro"
        assert env[C.ENV_MODEL_NAME] == "deepseek-v4-pro"


def test_same_input_same_plan_whatever_the_node_order() -> None:
    inventory = make_inventory().superpods(4, nodes=3).obj()
    shuffled = list(inventory.nodes)
    random.Random(7).shuffle(shuffled)
    md = v4_pro(3).obj()
    assert plan(md, inventory) == plan(md, inventory) == plan(md, Inventory(nodes=tuple(shuffled)))


def test_no_eligible_node_says_so() -> None:
    p = plan(v4_pro().obj(), make_inventory().cpu_nodes(2).obj())
    assert p.groups[0].reason == "needs 2 pods x 16 huawei.com/Ascend910; no eligible node"
    assert p.capacity.reasons == ("group 0: needs 2 pods x 16 huawei.com/Ascend910; no eligible node",
                                  "2 of 2 nodes excluded: 2 no huawei.com/Ascend910")


def test_zero_replicas_plans_nothing() -> None:
    p = plan(v4_pro(0).obj(), make_inventory().superpods(1).obj())
    assert p.groups == () and not p.capacity.limited


def test_policy_none_ignores_supernodes() -> None:
    inventory = make_inventory().add(make_node("a").superpod("sp-0").ascend(16),
                                     make_node("b").superpod("sp-1").ascend(16)).obj()
    p = plan(v4_pro(policy="None").obj(), inventory)
    assert p.groups[0].placed and p.groups[0].supernodes == ("sp-0", "sp-1")
