"""Autoscaling a deployment with pools, pure: the total's bounds, how a change is shared out per pool (spare
nodes and capacity per group first up, lowest capacity first down, each pool within its own bounds), and the
routers' per-pool capacity and draining reports."""

from __future__ import annotations

from typing import Any

import pytest
from builders import operator_md

from supernode.api.models import ModelDeployment
from supernode.operator import demand as D
from supernode.operator.autoscaling import View, neighbours, view_of
from supernode.operator.pool_scaling import PoolRoom, bounds, describe, group_concurrency, rooms, split


def room(name: str, replicas: int, lo: int = 0, hi: int = 10, placeable: int | None = None,
         weight: float = 1.0) -> PoolRoom:
    return PoolRoom(name, replicas, lo, hi, replicas + 1 if placeable is None else placeable, weight)


# (case, desired total, pools, expected replicas per pool)
SPLIT_CASES = [
    ("no change: as they are", 3, [room("a", 2), room("b", 1)], {"a": 2, "b": 1}),
    ("up: the pool with the best capacity per group", 4, [room("a", 2, weight=1), room("b", 1, weight=2)],
     {"a": 2, "b": 2}),
    ("up: spare nodes beat capacity", 4, [room("a", 2, weight=1), room("b", 1, weight=2, placeable=1)],
     {"a": 3, "b": 1}),
    ("up: no pool has spare nodes, the best one under its maximum still gets it", 4,
     [room("a", 2, weight=1, placeable=2), room("b", 1, weight=2, placeable=1)], {"a": 2, "b": 2}),
    ("up: a pool at its maximum is passed over", 4, [room("a", 2, weight=1), room("b", 1, hi=1, weight=5)],
     {"a": 3, "b": 1}),
    ("up: equal capacity, the pool with fewer groups, then the earlier one", 6,
     [room("a", 1), room("b", 1), room("c", 2)], {"a": 2, "b": 2, "c": 2}),
    ("up by two: one group at a time, spare room known for one more each", 5,
     [room("a", 2, weight=1), room("b", 1, weight=3)], {"a": 3, "b": 2}),
    ("up beyond every maximum: as far as the pools go", 9, [room("a", 1, hi=2), room("b", 1, hi=3)],
     {"a": 2, "b": 3}),
    ("down: the pool with the lowest capacity per group", 2, [room("a", 2, weight=1), room("b", 1, weight=2)],
     {"a": 1, "b": 1}),
    ("down: a pool at its minimum is passed over", 2, [room("a", 2, lo=2, weight=1), room("b", 1, weight=2)],
     {"a": 2, "b": 0}),
    ("down: equal capacity, the pool with more groups, then the later one", 3,
     [room("a", 2), room("b", 2)], {"a": 2, "b": 1}),
    ("down below every minimum: as far as the pools go", 0, [room("a", 2, lo=1), room("b", 1, lo=1)],
     {"a": 1, "b": 1}),
    ("a pool outside its bounds is brought inside first", 3, [room("a", 5, hi=2), room("b", 0, lo=1)],
     {"a": 2, "b": 1}),
]


@pytest.mark.parametrize(("case", "desired", "pools", "expected"), SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split(case: str, desired: int, pools: list[PoolRoom], expected: dict[str, int]) -> None:
    assert split(desired, pools) == expected


def mixed(*pools: dict[str, Any], lo: int = 1, hi: int = 6) -> ModelDeployment:
    b = operator_md("v4").accelerator("ascend-910c", 16).parallelism(tensor=16).autoscaling(lo, hi)
    for p in pools:
        b = b.pool(**p)
    return b.obj()


@pytest.mark.parametrize(("pools", "lo", "hi", "expected"), [
    ([{"name": "a"}, {"name": "b"}], 1, 6, (1, 6)),  # pools default to 0..autoscaling.maxReplicas each
    ([{"name": "a", "maxReplicas": 2}, {"name": "b", "maxReplicas": 1}], 1, 6, (1, 3)),  # the pools' sum caps
    ([{"name": "a", "minReplicas": 2}, {"name": "b", "minReplicas": 1}], 1, 6, (3, 6)),  # and floors
    ([{"name": "a", "minReplicas": 2, "maxReplicas": 2}], 4, 6, (2, 2)),  # the pools decide when they disagree
])
def test_bounds(pools: list[dict[str, Any]], lo: int, hi: int, expected: tuple[int, int]) -> None:
    assert bounds(mixed(*pools, lo=lo, hi=hi)) == expected


def test_rooms_read_the_spec_and_prefer_measured_capacity_to_the_declared_weight() -> None:
    md = mixed({"name": "a", "replicas": 2, "minReplicas": 1}, {"name": "b", "replicas": 1, "capacityWeight": 2.0,
                                                                 "maxReplicas": 3})
    got = rooms(md, {"a": 2}, {"a": 1.5})
    assert got == [PoolRoom("a", 2, 1, 6, 2, 1.5), PoolRoom("b", 1, 0, 3, 1, 2.0)]
    assert [r.replicas for r in rooms(md, {}, {}, {"a": 3, "b": 0})] == [3, 0]  # what the autoscaler wrote
    assert describe({"a": 2, "b": 1}, {"a": 2, "b": 2}) == "pool b 1 -> 2"


def test_group_concurrency_averages_the_pools_over_their_groups() -> None:
    md = mixed({"name": "a", "replicas": 3}, {"name": "b", "replicas": 1, "engine": {"maxConcurrency": 128}})
    assert group_concurrency(md) == round((3 * 32 + 128) / 4)
    md = mixed({"name": "a", "replicas": 0}, {"name": "b", "replicas": 0, "engine": {"maxConcurrency": 128}})
    assert group_concurrency(md) == 80


def test_the_view_counts_every_pool_and_a_mixed_deployment_is_nobodys_neighbour() -> None:
    md = mixed({"name": "a", "replicas": 2}, {"name": "b", "replicas": 1}).to_obj()
    view = view_of(md)
    assert view is not None and view.replicas == 3
    single = view_of(operator_md("x").accelerator("ascend-910c", 16).parallelism(tensor=16).autoscaling(1, 3).dict())
    assert single is not None
    assert neighbours(single, [single, view]) == []  # same accelerator pool, but preempting it would not work
    assert isinstance(view, View)


def test_router_reports_per_pool_capacity_and_draining_groups_per_pool() -> None:
    answers: dict[str, Any] = {
        "r1": {"capacity": [{"deployment": "llm/v4", "pool": "h200", "weight": 3.0},
                            {"deployment": "llm/v4", "pool": "ascend", "weight": 1.0},
                            {"deployment": "llm/other", "pool": "h200", "weight": 9.0},
                            {"deployment": "llm/v4", "pool": "bad", "weight": "x"}],
               "draining": [{"deployment": "llm/v4", "pool": "h200", "group": 0, "inFlight": 0},
                            {"deployment": "llm/v4", "pool": "ascend", "group": 0, "inFlight": 2}]},
        "r2": {"capacity": [{"deployment": "llm/v4", "pool": "h200", "weight": 2.0}],
               "draining": [{"deployment": "llm/v4", "pool": "h200", "group": 0, "inFlight": 0},
                            {"deployment": "llm/v4", "pool": "ascend", "group": 0, "inFlight": 0}]},
    }
    assert D.pool_capacity("llm/v4", answers) == {"h200": 2.5, "ascend": 1.0}
    assert D.idle_draining("llm/v4", answers, "h200") == {0}
    assert D.idle_draining("llm/v4", answers, "ascend") == set()  # group 0 of the other pool is busy on r1
    assert D.idle_draining("llm/v4", answers) == set()  # the unnamed pool has no draining group
