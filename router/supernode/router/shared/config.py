"""Where the router keeps state that several replicas must share (docs/tenants.md, "Several replicas").

``state``: admission state (limits, reservations, fair-share counters, replica heartbeats) —
``local`` (in-process, one replica) or ``redis``. ``metering.ledger``: ``sqlite`` or ``postgres``.

Secrets: a URL or DSN written in the config must not carry a password (refused at start, naming the
key); the password comes from an env var (``passwordEnv``) or the whole URL/DSN from one (``urlEnv`` /
``dsnEnv``, what the chart fills from a Kubernetes Secret). Error messages and logs only ever show a
redacted form (``redact``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

FailPolicy = Literal["failOpen", "failClosed"]
ENV_REDIS_URL = "SUPERNODE_REDIS_URL"
ENV_POSTGRES_DSN = "SUPERNODE_POSTGRES_DSN"
ENV_REPLICA_ID = "SUPERNODE_ROUTER_REPLICA"  # this replica's name in heartbeats (default: HOSTNAME = pod name)
_PREFIX = re.compile(r"^[A-Za-z0-9_.:{}-]{1,64}$")


class SecretConfigError(ValueError):
    """A backend URL/DSN that cannot be used; the message names the config key, never the secret."""


class _Cfg(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, hide_input_in_errors=True
    )


def redact(url: str) -> str:
    """``scheme://user:***@host:port/db`` — the password (and any query string) never shown."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable>"
    user = f"{parts.username}:***@" if parts.username and parts.password else (
        f"{parts.username}@" if parts.username else ("***@" if parts.password else ""))
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


def _check_url(url: str, key: str, schemes: tuple[str, ...], *, inline: bool) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a non-numeric port
    except ValueError as exc:
        raise SecretConfigError(f"{key}: malformed URL ({exc.__class__.__name__}) {redact(url)}") from None
    if parts.scheme not in schemes:
        raise SecretConfigError(f"{key}: scheme must be one of {', '.join(schemes)}, got {parts.scheme or 'none'!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise SecretConfigError(f"{key}: no host in {redact(url)}")
    if inline and parts.password:
        raise SecretConfigError(
            f"{key}: a password must not be written in the config; put the URL in an env var / Secret "
            f"({key}Env) or the password alone in passwordEnv")


def _with_password(url: str, password: str | None) -> str:
    if not password:
        return url
    p = urlsplit(url)
    user = quote(p.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{p.hostname}{f':{p.port}' if p.port else ''}"
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


class LocalState(_Cfg):
    type: Literal["local"] = "local"


class RedisState(_Cfg):
    type: Literal["redis"]
    url: str | None = Field(None, description="redis://host:port/db (no password: use passwordEnv)")
    url_env: str | None = Field(None, description=f"env var holding the whole URL (default {ENV_REDIS_URL})")
    password_env: str | None = Field(None, description="env var holding the password alone")
    key_prefix: str = Field("supernode", description="prefix of every key (several fleets may share a Redis)")
    lease_ttl_seconds: float = Field(30.0, ge=1, description="a reservation not renewed for this long expires")
    heartbeat_seconds: float = Field(2.0, gt=0, description="replica heartbeat, lease renewal and counter sync")
    timeout_seconds: float = Field(
        2.0, gt=0, description="per Redis socket operation; beyond it the outage policy applies")
    fail_policy: FailPolicy = Field("failOpen", description="default when a tenant sets none")
    capacity: Literal["share"] = Field(
        "share", description="pool capacity: each replica admits its share of (capacity) by live heartbeats")

    @model_validator(mode="after")
    def _check(self) -> RedisState:
        if not _PREFIX.match(self.key_prefix):
            raise SecretConfigError(f"state.keyPrefix: expected 1-64 of [A-Za-z0-9_.:{{}}-], got {self.key_prefix!r}")
        if self.url is not None:
            _check_url(self.url, "state.url", ("redis", "rediss", "unix"), inline=True)
        return self

    def resolve_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL to connect with (password merged in); SecretConfigError names the missing key."""
        env = os.environ if environ is None else environ
        if self.url is not None:
            url, key = self.url, "state.url"
        else:
            name = self.url_env or ENV_REDIS_URL
            url, key = env.get(name, ""), f"state.urlEnv ({name})"
            if not url:
                raise SecretConfigError(f"state: type redis needs state.url or the env var {name}")
            _check_url(url, key, ("redis", "rediss", "unix"), inline=False)
        if self.password_env:
            if not env.get(self.password_env):
                raise SecretConfigError(f"state.passwordEnv: env var {self.password_env} is empty or unset")
            url = _with_password(url, env[self.password_env])
        return url


StateConfig = Annotated[LocalState | RedisState, Field(discriminator="type")]


class SqliteLedgerConfig(_Cfg):
    type: Literal["sqlite"] = "sqlite"
    path: Path = Field(Path("supernode-usage.sqlite3"), description="SQLite file (WAL mode); ':memory:' ok")


class PostgresLedgerConfig(_Cfg):
    type: Literal["postgres"]
    dsn: str | None = Field(None, description="postgresql://user@host:5432/db (no password: use passwordEnv)")
    dsn_env: str | None = Field(None, description=f"env var holding the whole DSN (default {ENV_POSTGRES_DSN})")
    password_env: str | None = Field(None, description="env var holding the password alone")
    schema_: str = Field("public", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_size: int = Field(4, ge=1, le=64)
    connect_timeout_seconds: float = Field(3.0, gt=0)
    spool_path: Path = Field(
        Path("supernode-ledger-spool.sqlite3"),
        description="local durable spool for rows written while PostgreSQL is unreachable")
    replay_interval_seconds: float = Field(2.0, gt=0, description="how often the spool is replayed")
    heartbeat_seconds: float = Field(10.0, gt=0, description="this replica's heartbeat in router_replicas")
    stale_replica_seconds: float = Field(
        60.0, gt=0, description="open rows of a replica silent this long are closed as interrupted")

    @model_validator(mode="after")
    def _check(self) -> PostgresLedgerConfig:
        if self.dsn is not None:
            _check_url(self.dsn, "metering.ledger.dsn", ("postgresql", "postgres"), inline=True)
        return self

    def resolve_dsn(self, environ: Mapping[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        if self.dsn is not None:
            dsn = self.dsn
        else:
            name = self.dsn_env or ENV_POSTGRES_DSN
            dsn = env.get(name, "")
            if not dsn:
                raise SecretConfigError(
                    f"metering.ledger: type postgres needs metering.ledger.dsn or the env var {name}")
            _check_url(dsn, f"metering.ledger.dsnEnv ({name})", ("postgresql", "postgres"), inline=False)
        if self.password_env:
            if not env.get(self.password_env):
                raise SecretConfigError(f"metering.ledger.passwordEnv: env var {self.password_env} is empty or unset")
            dsn = _with_password(dsn, env[self.password_env])
        return dsn


LedgerConfig = Annotated[SqliteLedgerConfig | PostgresLedgerConfig, Field(discriminator="type")]


def replica_id(environ: Mapping[str, str] | None = None) -> str:
    """This replica's name in heartbeats: $SUPERNODE_ROUTER_REPLICA, else host (the pod name) + pid."""
    env = os.environ if environ is None else environ
    name = env.get(ENV_REPLICA_ID)
    if name:
        return name
    return f"{env.get('HOSTNAME') or os.uname().nodename}-{os.getpid()}"
