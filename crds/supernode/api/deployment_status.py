"""The status a ModelDeployment reports (conditions, groups, pools, autoscaler);
re-exported by supernode.api.models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from supernode.api.spec_types import _Model


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class GroupStatus(_Model):
    index: int
    pool: str | None = None
    phase: Literal["Pending", "Starting", "Ready", "Restarting", "Draining", "Failed"] = "Pending"
    ready: bool = False
    ready_pods: int = 0
    pods: int = 0
    supernode: str | None = None
    revision: str | None = None
    restarts: int = 0
    message: str = ""


class AutoscalingStatus(_Model):
    mode: str = ""
    desired_replicas: int = 0
    reason: str = ""
    message: str = ""
    last_scale_time: str | None = None
    last_scale_direction: Literal["Up", "Down"] | None = None
    cold_start_seconds: float | None = None  # learned from how long this deployment's groups took to be Ready
    signals: dict[str, float] = Field(default_factory=dict)
    signals_time: str | None = None


class PoolStatus(_Model):
    name: str
    accelerator: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    placeable_replicas: int = 0
    capacity_limited: bool = False
    message: str = ""


class ModelDeploymentStatus(_Model):
    observed_generation: int | None = None
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    placeable_replicas: int = 0
    selector: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    groups: list[GroupStatus] = Field(default_factory=list)
    pools: list[PoolStatus] = Field(default_factory=list)
    pool_summary: str = ""  # "ascend:2/2 h200:1/2" (ready/desired per pool), a printer column
    autoscaling: AutoscalingStatus | None = None
