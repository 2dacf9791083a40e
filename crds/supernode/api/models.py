"""The `ModelDeployment` API (supernode.io/v1alpha1): the single source of truth.

`crds/modeldeployment.yaml` is generated from these models (`supernode crds`). Field names are
the camelCase names users write in YAML; Python attributes are snake_case.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from supernode.api import rules
from supernode.api.autoscaling_spec import AutoscalingBehavior, AutoscalingMode, AutoscalingSpec, AutoscalingTarget
from supernode.api.component_specs import (
    AcceleratorSpec,
    EngineSpec,
    KVEventsSpec,
    ModelSpec,
    ParallelismSpec,
    PlacementSpec,
    RecoverySpec,
    ResourceRequirements,
    RolloutSpec,
    Toleration,
)
from supernode.api.deployment_status import (
    AutoscalingStatus,
    Condition,
    GroupStatus,
    ModelDeploymentStatus,
    PoolStatus,
)
from supernode.api.spec_types import (
    DEVICE_KINDS,
    EFFORT_MODES,
    VISIBLE_DEVICES_ENV,
    AcceleratorType,
    EngineType,
    Mode,
    SupernodePolicy,
    _Model,
)

__all__ = [
    "DEVICE_KINDS", "EFFORT_MODES", "VISIBLE_DEVICES_ENV", "AcceleratorSpec", "AcceleratorType", "AutoscalingBehavior",
    "AutoscalingMode", "AutoscalingSpec", "AutoscalingStatus", "AutoscalingTarget", "Condition", "EngineSpec",
    "EngineType", "GroupStatus", "KVEventsSpec", "Mode", "ModelDeployment", "ModelDeploymentSpec",
    "ModelDeploymentStatus", "ModelSpec", "ObjectMeta", "ParallelismSpec", "PlacementSpec", "PoolSpec", "PoolStatus",
    "RecoverySpec", "ResourceRequirements", "RolloutSpec", "SupernodePolicy", "Toleration",
]


def _all_modes() -> list[Mode]:
    return list(Mode)


_POOL_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class PoolSpec(_Model):
    """One accelerator pool of a mixed deployment. A field left out is inherited from the top-level spec;
    a field given replaces the top-level one whole (no deep merge)."""

    name: str = Field(
        min_length=1, max_length=15, pattern=_POOL_NAME,
        description="Pool name (DNS label, at most 15 characters): part of its groups' names and the pool label.",
    )
    accelerator: AcceleratorSpec | None = Field(default=None, description="This pool's accelerator.")
    parallelism: ParallelismSpec | None = Field(default=None, description="Parallel layout of this pool's groups.")
    engine: EngineSpec | None = Field(default=None, description="Engine of this pool's pods (image, args, ...).")
    placement: PlacementSpec | None = Field(default=None, description="Where this pool's groups may run.")
    resources: ResourceRequirements | None = Field(default=None, description="CPU/memory of this pool's engines.")
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Replica groups of this pool.")
    min_replicas: int | None = Field(
        default=None, ge=0, le=1000,
        description="With spec.autoscaling: fewest groups the autoscaler leaves this pool (default 0).")
    max_replicas: int | None = Field(
        default=None, ge=0, le=1000,
        description="With spec.autoscaling: most groups the autoscaler gives this pool (default "
                    "autoscaling.maxReplicas).")
    capacity_weight: float = Field(
        default=1.0, gt=0, le=1000,
        description="Relative throughput of one of this pool's groups: the router's prior until it has measured "
                    "the groups' capacity from their traffic.",
    )


class ModelDeploymentSpec(_Model):
    model: ModelSpec = Field(description="What is served and under which names.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Inference engine of the pods.")
    accelerator: AcceleratorSpec = Field(description="Accelerator type and devices per pod.")
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec, description="Parallel layout of one replica group (pods are derived)."
    )
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Where groups may run.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Replica groups (the /scale target).")
    modes: list[Mode] = Field(
        default_factory=_all_modes, min_length=1, max_length=3, description="Reasoning modes these groups serve."
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How groups are replaced (counts groups).")
    recovery: RecoverySpec = Field(default_factory=RecoverySpec, description="Gang-restart budget and back-off.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU/memory of the engine container (devices are added)."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Let the operator (or HPA/KEDA) size spec.replicas from router signals."
    )
    pools: list[PoolSpec] = Field(
        default_factory=list, max_length=8,
        description="Several accelerator pools serving the same model; each inherits the fields it leaves out.",
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ModelDeploymentSpec:
        # The same rules the CRD's CEL validations enforce (supernode.api.rules), same messages.
        broken = rules.violations(self.model_dump(by_alias=True, mode="json", exclude_none=True))
        if broken:
            rule = broken[0]
            context = {"message": rule.message, "field_path": rule.field_path}
            raise PydanticCustomError("cross_field", "{message}", context)
        return self

    @property
    def pods_per_group(self) -> int:
        """Pods in one replica group: devices / devices-per-pod; one rank per pod on cpu."""
        per_pod = self.accelerator.devices_per_pod
        world = self.parallelism.world_devices
        return world if per_pod == 0 else max(1, world // per_pod)


class ObjectMeta(BaseModel):
    """The subset of metadata we read; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class ModelDeployment(_Model):
    api_version: Literal["supernode.io/v1alpha1"] = Field(default="supernode.io/v1alpha1", alias="apiVersion")
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> ModelDeployment:
        return cls.model_validate(obj)

    def to_obj(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
