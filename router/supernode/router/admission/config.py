"""Admission configuration: parsed and validated first (pydantic), objects built from it second."""

from __future__ import annotations

import math
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from supernode.api import constants as C
from supernode.api.models import Mode
from supernode.router.contracts import PoolKey, SpillRule


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class QueueConfig(_Config):
    max_wait_seconds: float = Field(60.0, gt=0, description="bound on a request's wait in the admission queue")
    max_queue_length: int = Field(1024, ge=0, description="waiters across all pools; beyond it → 429 queue_full")
    keepalive_interval_seconds: float = Field(10.0, gt=0, description="SSE `: keep-alive` period (request path)")
    dispatch_interval_seconds: float = Field(
        0.5, ge=0, description="poll of pool capacity so waiters start when endpoints appear; 0 = off"
    )
    service_time_ewma_alpha: float = Field(0.2, gt=0, le=1, description="smoothing of the observed service time")


class PoolRef(_Config):
    model: str
    mode: Mode

    def key(self) -> PoolKey:
        return PoolKey(model=self.model, mode=self.mode)


class SpillOverRule(_Config):
    """When ``from`` is saturated, try ``to`` in order (Think Max → Think High, Pro → Flash)."""

    from_: PoolRef = Field(alias="from")
    to: list[PoolRef] = Field(min_length=1)

    def rule(self) -> SpillRule:
        return SpillRule(source=self.from_.key(), targets=tuple(t.key() for t in self.to))


class SpillOverConfig(_Config):
    enabled: bool = True
    rules: list[SpillOverRule] = Field(default_factory=list)

    def rules_by_source(self) -> dict[PoolKey, SpillRule]:
        out: dict[PoolKey, SpillRule] = {}
        for r in self.rules:
            rule = r.rule()
            if rule.source in out:
                raise ValueError(f"spillOver.rules: two rules for {rule.source.model}/{rule.source.mode.value}")
            out[rule.source] = rule
        return out


class CapacityConfig(_Config):
    """How the request path turns discovery into ``PoolCapacity.capacity`` (see ``pool_capacity``)."""

    per_group_concurrency: int = Field(32, ge=1, description="admitted concurrent requests per ready replica group")
    per_model_concurrency: dict[str, int] = Field(default_factory=dict, description="override per model name")
    capacity_limited_factor: float = Field(
        0.5, ge=0, le=1, description="multiplier when the ModelDeployment reports CapacityLimited"
    )

    @field_validator("per_model_concurrency")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if n < 1:
                raise ValueError(f"per_model_concurrency[{k}] must be >= 1, got {n}")
        return v

    def group_concurrency(self, model: str, engine_max: int | None = None) -> int:
        """Per-group concurrency: the model override, else the engine's own limit, else the default."""
        if model in self.per_model_concurrency:
            return self.per_model_concurrency[model]
        return engine_max if engine_max and engine_max > 0 else self.per_group_concurrency

    def pool_capacity(
        self, model: str, ready_groups: int, *, capacity_limited: bool = False, engine_max: int | None = None
    ) -> int:
        """Pure helper for the request path's ``PoolCapacity``: ready groups x per-group concurrency,
        scaled down (at least 1 while a group is ready) when the deployment is CapacityLimited."""
        if ready_groups <= 0:
            return 0
        n = ready_groups * self.group_concurrency(model, engine_max)
        if capacity_limited:
            n = max(1, math.floor(n * self.capacity_limited_factor))
        return n


class AdminConfig(_Config):
    """The admin API key: a sha256 hex digest, or the name of an env var holding the plain key."""

    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    key_env: str | None = C.ENV_ADMIN_KEY

    def resolve_digest(self, environ: dict[str, str] | None = None) -> str | None:
        from supernode.router.admission.tenants import hash_key

        if self.key_sha256:
            return self.key_sha256
        env = os.environ if environ is None else environ
        if self.key_env and env.get(self.key_env):
            return hash_key(env[self.key_env])
        return None


class AdmissionConfig(_Config):
    tenants_file: Path | None = Field(
        None, description="YAML/JSON tenants file (or a mounted Secret/ConfigMap key); must exist at startup"
    )
    anonymous: bool = Field(
        False, description="explicitly run WITHOUT authentication: every request is tenant 'anonymous' "
        "(local trials). The only way to turn auth off: without it a tenantsFile is required"
    )
    tenants_reload_seconds: float = Field(5.0, ge=0, description="mtime poll period; 0 = no live reload")
    require_tenants_file: bool = Field(
        True, description="kept for old configs: a configured tenants file is always required now"
    )
    admin: AdminConfig = Field(default_factory=lambda: AdminConfig.model_validate({}))
    queue: QueueConfig = Field(default_factory=lambda: QueueConfig.model_validate({}))
    spill_over: SpillOverConfig = Field(default_factory=lambda: SpillOverConfig.model_validate({}))
    capacity: CapacityConfig = Field(default_factory=lambda: CapacityConfig.model_validate({}))
    throttling: bool = Field(True, description="false = admit everything (no limits, no queue): for comparison")

    @model_validator(mode="after")
    def _check_rules(self) -> AdmissionConfig:
        self.spill_over.rules_by_source()
        if self.tenants_file is None and not self.anonymous:
            raise ValueError("admission: set tenantsFile (API keys), or anonymous: true to run without "
                             "authentication")
        if self.tenants_file is not None and self.anonymous:
            raise ValueError("admission: tenantsFile and anonymous: true contradict each other")
        return self

    def with_base_dir(self, base: Path) -> AdmissionConfig:
        """A relative ``tenants_file`` is taken relative to the config file's folder."""
        if self.tenants_file is None or self.tenants_file.is_absolute():
            return self
        return self.model_copy(update={"tenants_file": (base / self.tenants_file).resolve()})
