"""Planner benchmark: 1,000 Ascend nodes in 100 SuperPoDs, 200 ModelDeployments planned one after
another (each against the inventory the previous ones left), side by side with two baselines:

- "planner, no index": the same planner with its per-supernode capacity index replaced by a full
  rescan of every node before each group (what an unindexed planner does);
- "lean brute force": a minimal re-implementation of the same rules (no env, no plan objects),
  also a correctness cross-check: all three must place every group on the same nodes.

A second scenario (one deployment with many small groups) shows where the index matters.

    python benchmarks/planner_bench.py [--nodes 1000 --superpods 100 --deployments 200 --seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from unittest import mock

from supernode.api import constants as C
from supernode.api.models import ModelDeployment, SupernodePolicy
from supernode.operator import planner as planner_module
from supernode.operator.nodepool import CapacityIndex, Domain
from supernode.operator.planner import apply_plan, plan
from supernode.operator.types import Inventory, NodeInfo, Plan

SHAPES = (  # (devices per pod, pods per group, policy): V4-Pro on A3, V4-Pro on A2, V4-Flash, 4-node groups
    (16, 2, "Required"), (8, 4, "Required"), (16, 1, "Required"), (16, 4, "Preferred"), (8, 1, "None"),
)


def make_inventory(nodes: int, superpods: int, rng: random.Random) -> Inventory:
    per_sp = max(1, nodes // superpods)
    out = []
    for i in range(nodes):
        taints = ()
        used = {C.RESOURCE_ASCEND: rng.choice([0, 0, 0, 0, 8, 16])}
        out.append(NodeInfo(name=f"a3-{i:05d}", labels={C.NODE_LABEL_ASCEND_SUPERPOD: f"sp-{i // per_sp:03d}"},
                            allocatable={C.RESOURCE_ASCEND: 16}, used=used, taints=taints))
    return Inventory(nodes=tuple(out))


def make_deployments(count: int, rng: random.Random) -> list[ModelDeployment]:
    out = []
    for i in range(count):
        per_pod, pods, policy = rng.choice(SHAPES)
        out.append(ModelDeployment.from_obj({
            "metadata": {"name": f"md-{i:03d}"},
            "spec": {"model": {"name": f"m{i}", "source": "pvc://cache/m"},
                     "accelerator": {"type": "ascend-910c", "devicesPerPod": per_pod},
                     "parallelism": {"tensor": per_pod, "data": pods}, "replicas": rng.randint(1, 4),
                     "placement": {"supernode": policy, "spreadGroups": rng.random() < 0.8}},
        }))
    return out


def naive_plan(md: ModelDeployment, inventory: Inventory) -> list[list[str] | None]:
    """Same rules, no index: every group rescans every node to find each supernode's room."""
    spec = md.spec
    per_pod, pods = spec.accelerator.devices_per_pod, spec.pods_per_group
    free = {n.name: n.allocatable.get(C.RESOURCE_ASCEND, 0) - n.used.get(C.RESOURCE_ASCEND, 0)
            for n in inventory.nodes if n.ready and not n.unschedulable and n.allocatable.get(C.RESOURCE_ASCEND)}
    label = {n.name: n.labels.get(C.NODE_LABEL_ASCEND_SUPERPOD) or f"node/{n.name}" for n in inventory.nodes}
    own: Counter[str] = Counter()
    groups: list[list[str] | None] = []
    policy, spread = spec.placement.supernode, spec.placement.spread_groups
    for _ in range(spec.replicas):
        rooms: dict[str, list[str]] = {}
        for name in sorted(free):  # the rescan the index avoids
            rooms.setdefault(label[name], []).append(name)
        room = {d: sum(free[n] // per_pod for n in ns) for d, ns in rooms.items()}
        if policy is SupernodePolicy.NONE:
            candidates = [n for d in rooms for n in rooms[d]]
        else:
            fitting = [d for d in rooms if room[d] >= pods]
            if fitting:
                best = min(fitting, key=lambda d: (own[d] if spread else -own[d], room[d], d))
                candidates = rooms[best]
            elif policy is SupernodePolicy.PREFERRED:
                candidates = [n for d in sorted(rooms, key=lambda d: (-room[d], d)) for n in rooms[d]]
            else:
                candidates = []
        chosen: list[str] = []
        ordered = candidates if policy is SupernodePolicy.PREFERRED and not any(
            room[d] >= pods for d in rooms) else sorted(candidates, key=lambda n: (-(free[n] // per_pod), n))
        for name in ordered:
            take = min(free[name] // per_pod, pods - len(chosen))
            chosen += [name] * take
            if len(chosen) == pods:
                break
        if len(chosen) < pods:
            groups.append(None)
            continue
        for name in chosen:
            free[name] -= per_pod
        own[label[chosen[0]]] += 1
        groups.append(chosen)
    return groups


class RescanIndex(CapacityIndex):
    """The planner's index without its incremental room: every read of `domains` rescans every node."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._members = {key: (d.supernode, list(d.nodes)) for key, d in self._domains.items()}

    @property  # type: ignore[override]
    def domains(self) -> dict[str, Domain]:
        if "_members" not in self.__dict__:  # still being built by CapacityIndex.__init__
            return self._domains
        return {key: Domain(key=key, supernode=sn, nodes=nodes, room=sum(self.room(n) for n in nodes))
                for key, (sn, nodes) in self._members.items()}

    @domains.setter
    def domains(self, value: dict[str, Domain]) -> None:
        self._domains = value


def plan_without_index(md: ModelDeployment, inventory: Inventory) -> Plan:
    with mock.patch.object(planner_module, "CapacityIndex", RescanIndex):
        return plan(md, inventory)


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _nodes(p: Plan) -> list[list[str | None] | None]:
    return [[pod.node for pod in g.pods] if g.placed else None for g in p.groups]


def report(name: str, times: list[float]) -> None:
    p99 = statistics.quantiles(times, n=100)[98] if len(times) >= 2 else times[0]
    print(f"  {name:<20} total {sum(times) * 1e3:8.1f} ms   per deployment: mean {statistics.mean(times) * 1e3:7.3f} ms"
          f"   p99 {p99 * 1e3:7.3f} ms   max {max(times) * 1e3:7.3f} ms")


def many_groups(inventory: Inventory, replicas: int) -> None:
    md = ModelDeployment.from_obj({
        "metadata": {"name": "flash"},
        "spec": {"model": {"name": "f", "source": "pvc://cache/f"},
                 "accelerator": {"type": "ascend-910c", "devicesPerPod": 4}, "parallelism": {"tensor": 4},
                 "replicas": replicas, "placement": {"supernode": "Required"}},
    })
    ours, fast = _timed(plan, md, inventory)
    other, slow = _timed(plan_without_index, md, inventory)
    assert _nodes(ours) == _nodes(other)
    print(f"one deployment, {replicas} one-pod groups: planner {fast * 1e3:.1f} ms, planner without index "
          f"{slow * 1e3:.1f} ms ({slow / fast:.1f}x); {ours.capacity.placeable} placed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--superpods", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.superpods, args.deployments = 40, 4, 8
    rng = random.Random(args.seed)
    inventory = make_inventory(args.nodes, args.superpods, rng)
    deployments = make_deployments(args.deployments, rng)

    fresh = inventory
    times: dict[str, list[float]] = {"planner": [], "planner, no index": [], "lean brute force": []}
    placed = desired = 0
    for md in deployments:
        ours, t_ours = _timed(plan, md, inventory)
        other, t_other = _timed(plan_without_index, md, inventory)
        lean, t_lean = _timed(naive_plan, md, inventory)
        assert _nodes(ours) == _nodes(other) == lean, f"{md.metadata.name}: baselines disagree"
        for name, t in zip(times, (t_ours, t_other, t_lean), strict=True):
            times[name].append(t)
        placed += ours.capacity.placeable
        desired += ours.capacity.desired
        inventory = apply_plan(inventory, ours)

    print(f"{args.nodes} nodes, {args.superpods} SuperPoDs, {args.deployments} ModelDeployments planned in turn; "
          f"{placed} of {desired} groups placed; identical placements in all three")
    for name, values in times.items():
        report(name, values)
    total = sum(times["planner"])
    print(f"  ratios (baseline / planner): no index {sum(times['planner, no index']) / total:.2f}x, "
          f"lean brute force {sum(times['lean brute force']) / total:.2f}x")
    many_groups(fresh, replicas=args.nodes)


if __name__ == "__main__":
    main()
