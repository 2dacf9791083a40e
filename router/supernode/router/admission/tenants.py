"""Tenants: a YAML/JSON file (local, or a mounted Kubernetes Secret/ConfigMap) of API keys → tenants.

Keys are stored as sha256 hex digests; ``prefix`` is a human hint (e.g. ``sk-acme-``), never a secret.
Hash a key with ``python -m supernode.router.admission.hash_key`` (see docs/tenants.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from supernode.api.models import Mode
from supernode.router.admission.config import SpillOverRule
from supernode.router.contracts import ANONYMOUS, PoolKey, SpillRule, Tenant
from supernode.router.errors import AuthError

log = logging.getLogger(__name__)

DEFAULT_TIERS: dict[str, int] = {"premium": 0, "standard": 1, "free": 2}


def hash_key(api_key: str) -> str:
    """The stored form of an API key: sha256 hex digest of its UTF-8 bytes."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class KeySpec(_Spec):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str = Field("", max_length=16, description="first characters of the key, for humans")
    name: str = ""


class TenantSpec(_Spec):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    tier: str = "standard"
    keys: list[KeySpec] = Field(default_factory=list)
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (prompt estimate + max_tokens)")
    max_concurrent: int | None = Field(None, ge=1)
    monthly_token_quota: int | None = Field(None, ge=1, description="prompt + completion tokens per UTC month")
    allowed_models: list[str] = Field(default_factory=list)
    allowed_modes: list[Mode] = Field(default_factory=list)
    spill_over: bool = True
    spill_over_rules: list[SpillOverRule] = Field(default_factory=list, description="override the global rules")
    state_outage: Literal["failOpen", "failClosed"] | None = Field(
        None, description="shared state (Redis) unreachable: local limits at 1/N (failOpen) or 503 (failClosed); "
        "None = the router's state.failPolicy")


class TenantsFile(_Spec):
    tiers: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    tenants: list[TenantSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> TenantsFile:
        seen_ids: set[str] = set()
        seen_keys: dict[str, str] = {}
        for i, t in enumerate(self.tenants):
            if t.id in seen_ids:
                raise ValueError(f"tenants[{i}].id: duplicate tenant id {t.id!r}")
            seen_ids.add(t.id)
            if t.tier not in self.tiers:
                raise ValueError(f"tenants[{i}].tier: unknown tier {t.tier!r} (tiers: {sorted(self.tiers)})")
            for k in t.keys:
                if k.sha256 in seen_keys:
                    raise ValueError(f"tenants[{i}].keys: key already belongs to tenant {seen_keys[k.sha256]!r}")
                seen_keys[k.sha256] = t.id
        return self


@dataclass(frozen=True, slots=True)
class TenantEntry:
    """A tenant as the gatekeeper uses it: the contract's Tenant plus its limits."""

    tenant: Tenant
    spec: TenantSpec

    def spill_rules(self) -> dict[PoolKey, SpillRule]:
        return {r.from_.key(): r.rule() for r in self.spec.spill_over_rules}


class TenantDirectory:
    """Immutable key → tenant lookup built from one parsed file. ``None`` file = auth disabled."""

    def __init__(self, parsed: TenantsFile | None, *, source: str = "") -> None:
        self.source = source
        self.enabled = parsed is not None
        self._by_digest: dict[str, TenantEntry] = {}
        self._by_id: dict[str, TenantEntry] = {}
        for spec in parsed.tenants if parsed else []:
            tenant = Tenant(
                id=spec.id,
                tier=spec.tier,
                priority=parsed.tiers[spec.tier] if parsed else 1,
                allowed_models=tuple(spec.allowed_models),
                allowed_modes=tuple(spec.allowed_modes),
            )
            entry = TenantEntry(tenant=tenant, spec=spec)
            self._by_id[spec.id] = entry
            for k in spec.keys:
                self._by_digest[k.sha256] = entry

    def authenticate(self, api_key: str | None) -> Tenant:
        if not self.enabled:
            return ANONYMOUS
        if not api_key:
            raise AuthError("missing API key (send `Authorization: Bearer <key>` or `x-api-key`)")
        entry = self._by_digest.get(hash_key(api_key))
        if entry is None:
            raise AuthError("invalid API key")
        return entry.tenant

    def entry(self, tenant_id: str) -> TenantEntry | None:
        return self._by_id.get(tenant_id)

    def entries(self) -> list[TenantEntry]:
        return list(self._by_id.values())

    def describe(self) -> list[dict[str, Any]]:
        """Tenants without secrets (key prefixes and names only), for ``GET /admin/tenants``."""
        out = []
        for e in self._by_id.values():
            d = e.spec.model_dump(mode="json", exclude={"keys"})
            d["priority"] = e.tenant.priority
            d["keys"] = [{"prefix": k.prefix, "name": k.name} for k in e.spec.keys]
            out.append(d)
        return out


class TenantsFileError(ValueError):
    pass


def parse_tenants(text: str, *, source: str = "<tenants>") -> TenantsFile:
    """Parse YAML or JSON text; errors name the file and the field."""
    try:
        raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise TenantsFileError(f"{source}: not valid YAML/JSON: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TenantsFileError(f"{source}: expected a mapping with `tenants:`, got {type(raw).__name__}")
    try:
        return TenantsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise TenantsFileError(f"{source}: {problems}") from exc


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, inode, size) following symlinks — a Secret/ConfigMap update swaps the `..data` link."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def load_directory(path: Path | None) -> TenantDirectory:
    """Load the tenants file; a missing file disables auth (callers log it loudly)."""
    if path is None or not path.exists():
        return TenantDirectory(None, source=str(path or ""))
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TenantsFileError(f"{path}: cannot read: {exc}") from exc
    return TenantDirectory(parse_tenants(text, source=str(path)), source=str(path))
