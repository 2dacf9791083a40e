"""Fluent builders for tests and benchmarks (also useful to the request path's tests).

tenants_file(tenant("acme").tier("premium").key("sk-acme-1").rpm(60)).write(path)
ctx(tenant_obj).model("deepseek-v4-pro").mode(Mode.THINK_MAX).tokens(100, 200).obj()
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from supernode.api.models import Mode
from supernode.router.admission.tenants import hash_key
from supernode.router.contracts import ANONYMOUS, PoolKey, RequestContext, Tenant, Usage, UsageRecord


class TenantBuilder:
    def __init__(self, id_: str) -> None:
        self._d: dict[str, Any] = {"id": id_, "tier": "standard", "keys": []}

    def tier(self, name: str) -> TenantBuilder:
        self._d["tier"] = name
        return self

    def key(self, plain: str, name: str = "") -> TenantBuilder:
        self._d["keys"].append({"sha256": hash_key(plain), "prefix": plain[:8], "name": name})
        return self

    def set(self, **fields: Any) -> TenantBuilder:
        self._d.update(fields)
        return self

    def rpm(self, n: int) -> TenantBuilder:
        return self.set(rpm=n)

    def tpm(self, n: int) -> TenantBuilder:
        return self.set(tpm=n)

    def concurrency(self, n: int) -> TenantBuilder:
        return self.set(maxConcurrent=n)

    def quota(self, n: int) -> TenantBuilder:
        return self.set(monthlyTokenQuota=n)

    def no_spill(self) -> TenantBuilder:
        return self.set(spillOver=False)

    def obj(self) -> dict[str, Any]:
        return dict(self._d)


def tenant(id_: str) -> TenantBuilder:
    return TenantBuilder(id_)


class TenantsFileBuilder:
    def __init__(self, *tenants: TenantBuilder) -> None:
        self._tenants = list(tenants)
        self._tiers: dict[str, int] | None = None

    def tiers(self, **tiers: int) -> TenantsFileBuilder:
        self._tiers = tiers
        return self

    def obj(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tenants": [t.obj() for t in self._tenants]}
        if self._tiers is not None:
            d["tiers"] = self._tiers
        return d

    def write(self, path: Path, *, fmt: str = "yaml") -> Path:
        text = json.dumps(self.obj()) if fmt == "json" else yaml.safe_dump(self.obj())
        path.write_text(text)
        return path


def tenants_file(*tenants: TenantBuilder) -> TenantsFileBuilder:
    return TenantsFileBuilder(*tenants)


class StaticCapacity:
    """A ``PoolCapacity`` from a dict; change ``caps`` to simulate endpoints coming and going."""

    def __init__(self, caps: dict[PoolKey, int] | None = None, default: int = 0) -> None:
        self.caps = dict(caps or {})
        self.default = default

    def capacity(self, pool: PoolKey) -> int:
        return self.caps.get(pool, self.default)


class CtxBuilder:
    def __init__(self, t: Tenant = ANONYMOUS) -> None:
        self._ctx = RequestContext(
            request_id=f"req-{uuid.uuid4().hex[:12]}", api="openai-chat", tenant=t, model="deepseek-v4-flash",
            mode=Mode.NON_THINK, stream=False, prompt_tokens_estimate=10, max_tokens=10,
        )  # fmt: skip

    def model(self, name: str) -> CtxBuilder:
        self._ctx = replace(self._ctx, model=name)
        return self

    def mode(self, mode: Mode) -> CtxBuilder:
        self._ctx = replace(self._ctx, mode=mode)
        return self

    def tokens(self, prompt: int, max_tokens: int) -> CtxBuilder:
        self._ctx = replace(self._ctx, prompt_tokens_estimate=prompt, max_tokens=max_tokens)
        return self

    def token_ids(self) -> CtxBuilder:
        self._ctx = replace(self._ctx, api="openai-completions", token_id_prompt=True)
        return self

    def obj(self) -> RequestContext:
        return self._ctx

    def pool(self) -> PoolKey:
        return PoolKey(self._ctx.model, self._ctx.mode)


def ctx(t: Tenant = ANONYMOUS) -> CtxBuilder:
    return CtxBuilder(t)


def usage_record(
    request_id: str = "r1",
    tenant: str = "acme",
    *,
    prompt: int = 10,
    cached: int = 0,
    completion: int = 5,
    reasoning: int = 0,
    at: float = 1_700_000_000.0,
    model: str = "deepseek-v4-flash",
    mode: Mode = Mode.NON_THINK,
    status: str = "ok",
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, tenant=tenant, api="openai-chat", model=model, mode=mode, served_model=model,
        served_mode=mode, endpoint="http://127.0.0.1:1", usage=Usage(prompt, cached, completion, reasoning),
        status=status, started_at=at - 1.0, finished_at=at,  # type: ignore[arg-type]
    )  # fmt: skip
