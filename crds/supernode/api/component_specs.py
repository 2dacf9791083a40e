"""The parts of a ModelDeployment spec a pool may override: model, engine, accelerator, parallelism,
placement, rollout, recovery and resources; re-exported by supernode.api.models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from supernode.api.spec_types import AcceleratorType, EngineType, SupernodePolicy, _Model

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


class ResourceRequirements(_Model):
    requests: dict[str, str] = Field(default_factory=dict, description="e.g. cpu, memory (Kubernetes quantities).")
    limits: dict[str, str] = Field(default_factory=dict, description="e.g. memory (Kubernetes quantities).")
