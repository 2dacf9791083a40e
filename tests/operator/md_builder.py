"""Fluent builders for ModelDeployment objects and plans in operator tests."""

from __future__ import annotations

import copy
from typing import Any, Self

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.operator.types import CapacityVerdict, GroupPlan, Plan, PodPlan


class MD:
    def __init__(self, name: str, namespace: str = "llm") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": C.API_VERSION, "kind": C.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
            "spec": {"model": {"name": "deepseek-v4-flash", "source": "pvc://model-cache/deepseek-v4-flash"},
                     "accelerator": {"type": "cpu"}, "replicas": 1,
                     "rollout": {"maxSurge": 1, "maxUnavailable": 0, "drainTimeoutSeconds": 0},
                     "recovery": {"maxGroupRestarts": 3, "backoffSeconds": 1, "maxBackoffSeconds": 4}},
        }

    def spec(self, **fields: Any) -> Self:
        self._obj["spec"].update(fields)
        return self

    def replicas(self, n: int) -> Self:
        return self.spec(replicas=n)

    def engine(self, type_: str, **extra: Any) -> Self:
        return self.spec(engine={"type": type_, **extra})

    def accelerator(self, type_: str, devices: int = 0, **extra: Any) -> Self:
        return self.spec(accelerator={"type": type_, "devicesPerPod": devices, **extra})

    def parallelism(self, **par: int) -> Self:
        return self.spec(parallelism=par)

    def source(self, uri: str) -> Self:
        self._obj["spec"]["model"]["source"] = uri
        return self

    def model(self, **fields: Any) -> Self:
        self._obj["spec"]["model"].update(fields)
        return self

    def placement(self, **fields: Any) -> Self:
        return self.spec(placement=fields)

    def rollout(self, **fields: Any) -> Self:
        return self.spec(rollout=fields)

    def no_uid(self) -> Self:
        for key in ("uid", "generation"):
            self._obj["metadata"].pop(key, None)
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def model_obj(self) -> ModelDeployment:
        return ModelDeployment.from_obj(self.obj())


def make_md(name: str = "v4-flash", namespace: str = "llm") -> MD:
    return MD(name, namespace)


def make_plan(md: ModelDeployment, nodes_per_group: list[list[str]], supernodes: list[str | None] | None = None,
              resource: str | None = None, unplaced: int = 0) -> Plan:
    pods = md.spec.pods_per_group
    groups = []
    for i, nodes in enumerate(nodes_per_group):
        sn = supernodes[i] if supernodes else None
        groups.append(GroupPlan(index=i, placed=True, supernode=sn, pods=tuple(
            PodPlan(rank=r, role=C.ROLE_LEADER if r == 0 else C.ROLE_WORKER, node=nodes[r] if nodes else None,
                    devices=md.spec.accelerator.devices_per_pod) for r in range(pods))))
    for j in range(unplaced):
        groups.append(GroupPlan(index=len(nodes_per_group) + j, placed=False, supernode=None, pods=(),
                                reason="no free supernode"))
    return Plan(deployment=md.metadata.name, pods_per_group=pods, devices_per_pod=md.spec.accelerator.devices_per_pod,
                resource_name=resource, groups=tuple(groups),
                capacity=CapacityVerdict(desired=len(groups), placeable=len(nodes_per_group),
                                         reasons=("no free supernode",) * unplaced))
