"""The replica-group planner: ModelDeployment + inventory → placed groups + capacity verdict.

Pure and deterministic (same input, same plan). Groups are placed one by one in index order, kept
groups first, so a plan for N+1 replicas places groups 0..N-1 exactly as the plan for N did.
Rules (docs/planner.md): `Required` keeps every pod of a group inside one supernode (a node with
no supernode label is a supernode of one node); `Preferred` tries that first and spans supernodes
only when no single one has room; `None` ignores supernodes. With `spreadGroups`, a group goes to
the supernode holding the fewest of this deployment's groups; ties go to the tightest fit (keeps
big supernodes whole for big groups), then to the lowest id. Devices are never over-committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from supernode.api import constants as C
from supernode.api.models import VISIBLE_DEVICES_ENV, ModelDeployment, SupernodePolicy
from supernode.api.pools import pool_name, pool_views
from supernode.api.supernodes import supernode_label_key
from supernode.operator.nodepool import (
    CapacityIndex,
    CapacityMemo,
    Domain,
    filter_key,
    node_filter,
    resource_name,
    summarize_exclusions,
)
from supernode.operator.types import (
    CapacityVerdict,
    ExistingBindings,
    GroupPlan,
    Inventory,
    NodeInfo,
    Plan,
    PodPlan,
)


def plan(
    md: ModelDeployment,
    inventory: Inventory,
    existing: ExistingBindings | None = None,
    *,
    supernode_label: str | None = None,
    memo: CapacityMemo | None = None,
) -> Plan:
    """Place `md.spec.replicas` groups on `inventory`, keeping still-valid `existing` bindings.

    `inventory` must not count this deployment's own pods as used (see `inventory_from_k8s(...,
    exclude_deployment=)`). `supernode_label` is the operator-wide Ascend SuperPoD label key; a
    spec's `placement.supernodeLabel` wins over it. `memo`: the node filtering and capacity index of earlier
    plans, patched where `inventory` differs from theirs (the same plan, in O(changed nodes)).
    """
    pool = pool_name(md)  # a deployment with several pools is planned one view at a time
    spec = md.spec
    per_pod = spec.accelerator.devices_per_pod
    pods = spec.pods_per_group
    resource = resource_name(spec)
    label_key = supernode_label_key(spec, supernode_label)
    policy = spec.placement.supernode
    by_name = {node.name: node for node in inventory.nodes}
    why_not = node_filter(spec, resource)
    if memo is not None:
        excluded, index = memo.index(inventory.nodes, filter_key(spec), why_not, label_key, resource, per_pod)
    else:
        excluded = {n.name: why for n in inventory.nodes if (why := why_not(n)) is not None}
        index = CapacityIndex(inventory.nodes, set(by_name) - set(excluded), label_key, resource, per_pod)
    own: Counter[str] = Counter()  # this deployment's groups per domain (spreading)
    notes: list[str] = []
    placed: dict[int, GroupPlan] = {}

    for gi in sorted(existing or {}):
        if not 0 <= gi < spec.replicas:
            continue
        bound = tuple(existing[gi]) if existing else ()
        problem = _kept_problem(bound, pods, by_name, index, policy)
        if problem:
            notes.append(f"group {gi}: re-placed, {problem}")
            continue
        nodes = [n for n in bound if n is not None]
        for name, count in Counter(nodes).items():
            index.take(name, count)
        own[_domain_key(index, nodes[0])] += 1
        placed[gi] = _group(md, gi, nodes, index, kept=True)

    failures: dict[int, str] = {}
    for gi in range(spec.replicas):
        if gi in placed:
            continue
        chosen, why = _place(index, pods, policy, spec.placement.spread_groups, own)
        if chosen is None:
            failures[gi] = _shortfall(index, pods, per_pod, resource, policy, why)
            placed[gi] = GroupPlan(index=gi, placed=False, supernode=None, reason=failures[gi],
                                   pods=tuple(_pod(md, gi, r, None, None) for r in range(pods)))
            continue
        for name, count in Counter(chosen).items():
            index.take(name, count)
        own[_domain_key(index, chosen[0])] += 1
        placed[gi] = _group(md, gi, chosen, index, kept=False)

    summary = summarize_exclusions(excluded, len(by_name))
    if summary:
        notes.insert(0, summary)
    notes.extend(inventory.skipped)
    groups = tuple(placed[gi] for gi in range(spec.replicas))
    reasons = _verdict_reasons(failures, summary)
    return Plan(
        deployment=md.metadata.name, pods_per_group=pods, devices_per_pod=per_pod, resource_name=resource,
        groups=groups, supernode_label=label_key, notes=tuple(notes), pool=pool,
        capacity=CapacityVerdict(desired=spec.replicas, placeable=sum(g.placed for g in groups), reasons=reasons),
    )


def _domain_key(index: CapacityIndex, node: str) -> str:
    return index.domain_of.get(node, f"node/{node}")


def _kept_problem(
    nodes: tuple[str | None, ...], pods: int, by_name: Mapping[str, NodeInfo], index: CapacityIndex,
    policy: SupernodePolicy,
) -> str | None:
    if len(nodes) != pods or any(n is None for n in nodes):
        return f"its binding has {len(nodes)} bound ranks, the group needs {pods}"
    for name, count in Counter(nodes).items():
        node = by_name.get(name or "")
        if node is None or not node.ready:
            return f"node {name} is {'gone' if node is None else 'not ready'}"
        if index.per_pod and index.free[node.name] < count * index.per_pod:
            return f"node {name} no longer has {count * index.per_pod} free {index.resource}"
    if policy is SupernodePolicy.REQUIRED and len({_domain_key(index, n or "") for n in nodes}) > 1:
        return "it spans more than one supernode"
    return None


def _fill(index: CapacityIndex, names: list[str], pods: int) -> list[str]:
    """Pods onto nodes, roomiest node first (fewest nodes per group), one entry per rank."""
    chosen: list[str] = []
    for name in sorted(names, key=lambda n: (-index.room(n), n)):
        take = min(index.room(name), pods - len(chosen))
        chosen.extend([name] * take)
        if len(chosen) == pods:
            return chosen
    return chosen


def _place(
    index: CapacityIndex, pods: int, policy: SupernodePolicy, spread: bool, own: Counter[str]
) -> tuple[list[str] | None, str]:
    domains = list(index.domains.values())
    if policy is SupernodePolicy.NONE:
        everything = _fill(index, [n for d in domains for n in d.nodes], pods)
        return (everything, "") if len(everything) == pods else (None, "total")
    fitting = [d for d in domains if d.room >= pods]
    if fitting:
        def rank(d: Domain) -> tuple[int, int, str]:
            return (own[d.key] if spread else -own[d.key], d.room, d.key)

        return _fill(index, min(fitting, key=rank).nodes, pods), ""
    if policy is SupernodePolicy.REQUIRED:
        return None, "one"
    # Preferred: span the fewest, roomiest supernodes.
    spill = [n for d in sorted(domains, key=lambda d: (-d.room, d.key)) for n in d.nodes if index.room(n) > 0]
    chosen: list[str] = []
    for name in spill:
        chosen.extend([name] * min(index.room(name), pods - len(chosen)))
        if len(chosen) == pods:
            return chosen, ""
    return None, "total"


def _shortfall(
    index: CapacityIndex, pods: int, per_pod: int, resource: str | None, policy: SupernodePolicy, why: str
) -> str:
    need = f"needs {pods} pod{'s' * (pods != 1)}" + (f" x {per_pod} {resource}" if per_pod else "")
    domains = list(index.domains.values())
    if not domains:
        return f"{need}; no eligible node"
    if why == "one":
        best = min(domains, key=lambda d: (-d.room, d.key))
        where = f"supernode {best.supernode}" if best.supernode else f"node {best.key[5:]} (no supernode label)"
        return f"{need} in one supernode; best {where} has room for {best.room} pod{'s' * (best.room != 1)}"
    total = sum(d.room for d in domains)
    return f"{need}; all eligible nodes together have room for {total}"


def _verdict_reasons(failures: Mapping[int, str], exclusions: str | None) -> tuple[str, ...]:
    if not failures:
        return ()
    by_reason: dict[str, list[int]] = {}
    for gi, why in failures.items():
        by_reason.setdefault(why, []).append(gi)
    lines = [f"group{'s' * (len(g) > 1)} {', '.join(map(str, g))}: {why}" for why, g in by_reason.items()]
    return (*lines, exclusions) if exclusions else tuple(lines)


def _group(md: ModelDeployment, gi: int, nodes: list[str], index: CapacityIndex, *, kept: bool) -> GroupPlan:
    supernodes = tuple(sorted({sn for n in nodes if (sn := index.supernode_of.get(n))}))
    supernode = supernodes[0] if len(supernodes) == 1 else None
    return GroupPlan(
        index=gi, placed=True, supernode=supernode, supernodes=supernodes, kept=kept,
        pods=tuple(_pod(md, gi, rank, node, supernode) for rank, node in enumerate(nodes)),
    )


def _pod(md: ModelDeployment, gi: int, rank: int, node: str | None, supernode: str | None) -> PodPlan:
    spec = md.spec
    per_pod = spec.accelerator.devices_per_pod
    par = spec.parallelism
    env = {
        C.ENV_DEPLOYMENT: md.metadata.name,
        C.ENV_GROUP: str(gi),
        C.ENV_MODEL_NAME: spec.model.name,
        C.ENV_RANK: str(rank),
        C.ENV_WORLD_SIZE: str(spec.pods_per_group),
        C.ENV_LEADER_ADDR: C.LEADER_ADDR_PLACEHOLDER,
        C.ENV_DEVICES_PER_POD: str(per_pod),
        C.ENV_TENSOR_PARALLEL: str(par.tensor),
        C.ENV_PIPELINE_PARALLEL: str(par.pipeline),
        C.ENV_DATA_PARALLEL: str(par.data),
        C.ENV_EXPERT_PARALLEL: str(par.expert),
        C.ENV_DEVICE: spec.accelerator.type.device,
    }
    visible = VISIBLE_DEVICES_ENV.get(spec.accelerator.type.device)
    if visible is not None:
        env[visible] = ",".join(str(d) for d in range(per_pod))
    if supernode:
        env[C.ENV_SUPERNODE_ID] = supernode
    if pool := pool_name(md):
        env[C.ENV_POOL] = pool
    role = C.ROLE_LEADER if rank == 0 else C.ROLE_WORKER
    return PodPlan(rank=rank, role=role, node=node, devices=per_pod, env=env)


def plan_pools(md: ModelDeployment, inventory: Inventory, *, supernode_label: str | None = None) -> list[Plan]:
    """Every pool of `md` (one plan without spec.pools), each on what the pools before it left."""
    plans = []
    for view in pool_views(md):
        plans.append(plan(view.md, inventory, supernode_label=supernode_label))
        inventory = apply_plan(inventory, plans[-1])
    return plans


def bindings(plan_: Plan) -> dict[int, tuple[str | None, ...]]:
    """The `existing` argument for the next plan: node per rank of every placed group."""
    return {g.index: tuple(p.node for p in g.pods) for g in plan_.groups if g.placed}


def apply_plan(inventory: Inventory, plan_: Plan) -> Inventory:
    """The inventory left after `plan_`'s placed pods took their devices (for planning the next one)."""
    if plan_.resource_name is None or plan_.devices_per_pod == 0:
        return inventory
    taken: Counter[str] = Counter(p.node for g in plan_.groups if g.placed for p in g.pods if p.node)
    res = plan_.resource_name
    nodes = tuple(
        node if node.name not in taken else NodeInfo(
            name=node.name, labels=node.labels, allocatable=node.allocatable, taints=node.taints,
            used={**node.used, res: node.used.get(res, 0) + taken[node.name] * plan_.devices_per_pod},
            ready=node.ready, unschedulable=node.unschedulable,
        )
        for node in inventory.nodes
    )
    return Inventory(nodes=nodes, skipped=inventory.skipped)
