"""The `ModelDeployment` API (supernode.io/v1alpha1): the single source of truth.

`crds/modeldeployment.yaml` is generated from these models (`supernode crds`). Field names are
the camelCase names users write in YAML; Python attributes are snake_case.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from supernode.api import constants as C
from supernode.api import rules


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields refused (a typo is an error, not a silent no-op)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


class Mode(StrEnum):
    NON_THINK = C.MODE_NON_THINK
    THINK_HIGH = C.MODE_THINK_HIGH
    THINK_MAX = C.MODE_THINK_MAX


# Effort values clients send (OpenAI `reasoning_effort`, Anthropic `output_config.effort`, lower-cased) and
# the mode each means: `none` turns thinking off; low/medium map to high, xhigh/ultra to max (FACTS.md).
# One table for the router and the engine.
EFFORT_MODES: dict[str, Mode] = {
    "none": Mode.NON_THINK,
    "minimal": Mode.THINK_HIGH,
    "low": Mode.THINK_HIGH,
    "medium": Mode.THINK_HIGH,
    "high": Mode.THINK_HIGH,
    "xhigh": Mode.THINK_MAX,
    "max": Mode.THINK_MAX,
    "ultra": Mode.THINK_MAX,
}


class EngineType(StrEnum):
    BUILTIN = "builtin"
    VLLM = "vllm"
    SGLANG = "sglang"
    MINDIE = "mindie"


class AcceleratorType(StrEnum):
    ASCEND_910B = "ascend-910b"
    ASCEND_910C = "ascend-910c"
    ASCEND_950 = "ascend-950"
    NVIDIA_H100 = "nvidia-h100"
    NVIDIA_H200 = "nvidia-h200"
    NVIDIA_B200 = "nvidia-b200"
    CPU = "cpu"

    @property
    def vendor(self) -> Literal["ascend", "nvidia", "cpu"]:
        if self.value.startswith("ascend"):
            return "ascend"
        if self.value.startswith("nvidia"):
            return "nvidia"
        return "cpu"

    @property
    def device(self) -> Literal["npu", "cuda", "cpu"]:
        """The torch device kind engines run on (`SUPERNODE_DEVICE`, the engine's `--device`)."""
        return DEVICE_KINDS[self.vendor]


# Torch device kind per accelerator vendor, and the env var that limits a process to its devices.
DEVICE_KINDS: dict[str, Literal["npu", "cuda", "cpu"]] = {"ascend": "npu", "nvidia": "cuda", "cpu": "cpu"}
VISIBLE_DEVICES_ENV: dict[str, str] = {"npu": C.ENV_ASCEND_VISIBLE_DEVICES, "cuda": C.ENV_CUDA_VISIBLE_DEVICES}


class SupernodePolicy(StrEnum):
    REQUIRED = "Required"  # every pod of a group inside one supernode
    PREFERRED = "Preferred"  # one supernode when possible, else span
    NONE = "None"  # ignore supernodes


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class ModelSpec(_Model):
    name: str = Field(
        min_length=1, max_length=128, pattern=_NAME_PATTERN,
        description="The model name clients send in requests.",
    )
    aliases: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=32, description="Other names routed here."
    )
    source: str = Field(
        pattern=r"^(pvc|hf|s3|builtin)://.+$",
        description="Where weights come from: pvc://CLAIM/path, hf://org/repo, s3://bucket/key, builtin://PRESET.",
    )
    revision: str | None = Field(default=None, description="hf:// revision or s3:// version to pin.")


class KVEventsSpec(_Model):
    """KV cache events published by the group leader in vLLM's wire format (ZMQ PUB + replay ROUTER), so
    every router replica keeps a precise prefix index of what the group holds (docs/operator.md)."""

    port: int = Field(default=5557, ge=1024, le=65535, description="Leader port of the ZMQ PUB socket.")
    replay_port: int = Field(
        default=5558, ge=1024, le=65535, description="Leader port answering replay requests for missed batches."
    )
    topic: str = Field(
        default="kv-events", max_length=64, pattern=r"^[A-Za-z0-9._-]*$", description="Topic frame of each batch."
    )
    buffer_steps: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Published batches the engine keeps for replay."
    )


class EngineSpec(_Model):
    type: EngineType = Field(default=EngineType.BUILTIN, description="Inference engine run in the pods.")
    image: str | None = Field(default=None, description="Container image; defaults per engine type.")
    args: list[str] = Field(default_factory=list, description="Extra engine arguments, appended.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every rank.")
    port: int = Field(default=8000, ge=1, le=65535, description="Leader HTTP port.")
    max_concurrency: int = Field(
        default=32, ge=1, le=100_000,
        description="Requests one group serves at once; the router admits ready groups x this.",
    )
    kv_events: KVEventsSpec | None = Field(
        default=None,
        description="Publish KV cache events for KV-aware routing (builtin, vllm, sglang); unset publishes none.",
    )


class AcceleratorSpec(_Model):
    type: AcceleratorType = Field(description="Accelerator family the pods run on.")
    devices_per_pod: int = Field(default=0, ge=0, le=64, description="Devices per pod (0 for cpu).")
    resource_name: str | None = Field(
        default=None, description="Override of the device-plugin resource (e.g. huawei.com/ascend-1980)."
    )


class ParallelismSpec(_Model):
    tensor: int = Field(default=1, ge=1, le=1024, description="Tensor-parallel size inside one group.")
    pipeline: int = Field(default=1, ge=1, le=64, description="Pipeline-parallel stages inside one group.")
    data: int = Field(default=1, ge=1, le=1024, description="Data-parallel ranks inside one group.")
    expert: int = Field(default=1, ge=1, le=4096, description="Expert-parallel size (over TPxDP ranks).")

    @property
    def world_devices(self) -> int:
        """Devices (or CPU ranks) one replica group spans."""
        return self.tensor * self.pipeline * self.data


class Toleration(_Model):
    key: str | None = Field(default=None, description="Taint key; empty with Exists tolerates every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value to match (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(default=None, description="How long a NoExecute taint is tolerated.")


class PlacementSpec(_Model):
    supernode: SupernodePolicy = Field(
        default=SupernodePolicy.PREFERRED,
        description="Required: every pod of a group in one supernode; Preferred: when possible; None: ignore.",
    )
    spread_groups: bool = Field(default=True, description="Spread replica groups across supernodes.")
    supernode_label: str | None = Field(
        default=None, description="Node label holding the supernode id (default per accelerator vendor)."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels a node must carry.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the engine pods tolerate.")
    scheduler_name: str | None = Field(default=None, description="e.g. volcano for gang scheduling.")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the engine pods.")


class RolloutSpec(_Model):
    max_surge: int = Field(default=1, ge=0, le=100, description="Extra groups during a rollout.")
    max_unavailable: int = Field(default=0, ge=0, le=100, description="Groups that may be down.")
    drain_timeout_seconds: int = Field(
        default=900, ge=0, le=86_400, description="How long in-flight requests may finish before a group is deleted."
    )


class RecoverySpec(_Model):
    max_group_restarts: int = Field(default=5, ge=0, le=1000, description="Gang restarts before Degraded.")
    backoff_seconds: int = Field(default=10, ge=1, le=3600, description="First back-off after a gang restart.")
    max_backoff_seconds: int = Field(default=600, ge=1, le=86_400, description="Back-off cap (doubling).")


class AutoscalingMode(StrEnum):
    BUILTIN = "Builtin"  # the operator's autoscaler decides spec.replicas
    EXTERNAL = "External"  # HPA/KEDA drive the /scale subresource; the operator only exports signals


class AutoscalingTarget(_Model):
    queue_depth_per_replica: int = Field(
        default=4, ge=1, le=10_000, description="Queued requests per ready group above which a group is added."
    )
    queued_tokens_per_replica: int | None = Field(
        default=None, ge=1, le=100_000_000,
        description="Queued prompt tokens per ready group above which a group is added (off when unset).",
    )
    kv_cache_usage: float | None = Field(
        default=None, ge=0.01, le=1,
        description="Engine KV-cache usage (0-1, mean over ready groups) above which a group is added.",
    )
    time_in_queue_seconds: float | None = Field(
        default=None, ge=0.1, le=3600,
        description="Wait of the oldest queued request above which a group is added (off when unset).",
    )
    utilization: int = Field(
        default=70, ge=1, le=100,
        description="Percent of engine.maxConcurrency a group should run at; sizes the fleet up and down.",
    )


class AutoscalingBehavior(_Model):
    scale_up_stabilization_seconds: int = Field(
        default=30, ge=0, le=3600, description="A scale-up signal must hold this long before a group is added."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=86_400,
        description="Every sample in this window must allow one group fewer before a group is drained.",
    )
    ready_timeout_seconds: int = Field(
        default=1800, ge=1, le=86_400,
        description="Pending guard: no new decision until the last one is Ready or this long has passed.",
    )
    cold_start_seconds: int = Field(
        default=300, ge=0, le=86_400,
        description="First guess of how long a new group takes to become Ready (status keeps the learned value).",
    )


class AutoscalingSpec(_Model):
    mode: AutoscalingMode = Field(
        default=AutoscalingMode.BUILTIN, description="Builtin: the operator decides; External: HPA/KEDA use /scale."
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replica groups (0 allows scale to zero).")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most replica groups.")
    priority: int = Field(
        default=0, ge=0, le=1000,
        description="Pool arbitration: a higher priority may take a group from a lower one above its minimum.",
    )
    pool: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Deployments naming the same pool share its supernodes (default: the accelerator type).",
    )
    target: AutoscalingTarget = Field(default_factory=AutoscalingTarget, description="Scaling signals and targets.")
    behavior: AutoscalingBehavior = Field(
        default_factory=AutoscalingBehavior, description="Stabilisation windows, pending guard and cold start."
    )


class ResourceRequirements(_Model):
    requests: dict[str, str] = Field(default_factory=dict, description="e.g. cpu, memory (Kubernetes quantities).")
    limits: dict[str, str] = Field(default_factory=dict, description="e.g. memory (Kubernetes quantities).")


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
