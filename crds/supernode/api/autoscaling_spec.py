"""spec.autoscaling of a ModelDeployment: mode, bounds, signals and targets, stabilisation;
re-exported by supernode.api.models.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from supernode.api.spec_types import _Model


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
