"""Backend config: parsed at start, malformed URLs/DSNs refused naming the key, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from supernode.router.config import parse_config
from supernode.router.shared.config import (
    LocalState,
    PostgresLedgerConfig,
    RedisState,
    SecretConfigError,
    SqliteLedgerConfig,
    redact,
)

BASE = {"discovery": {"type": "local", "path": "endpoints.json"}, "admission": None}


def cfg(**sections: object) -> object:
    return parse_config({**BASE, **sections})


def test_defaults_are_local_and_sqlite() -> None:
    c = parse_config({**BASE, "metering": {}})
    assert isinstance(c.state, LocalState)
    assert c.metering is not None and isinstance(c.metering.effective_ledger(), SqliteLedgerConfig)


def test_backends_parse() -> None:
    c = parse_config({**BASE, "state": {"type": "redis", "url": "redis://10.0.0.1:6379/2", "keyPrefix": "fleet-a"},
                      "metering": {"ledger": {"type": "postgres", "dsn": "postgresql://app@db:5432/usage"}}})
    assert isinstance(c.state, RedisState) and c.state.key_prefix == "fleet-a"
    assert c.metering is not None and isinstance(c.metering.ledger, PostgresLedgerConfig)


@pytest.mark.parametrize(("sections", "key"), [
    ({"state": {"type": "redis", "url": "http://h:6379"}}, "state.url"),
    ({"state": {"type": "redis", "url": "redis://h:port/0"}}, "state.url"),
    ({"state": {"type": "redis", "url": "redis:///0"}}, "state.url"),
    ({"state": {"type": "redis", "url": "redis://h", "keyPrefix": "a b"}}, "state.keyPrefix"),
    ({"metering": {"ledger": {"type": "postgres", "dsn": "mysql://h/db"}}}, "metering.ledger.dsn"),
    ({"metering": {"ledger": {"type": "postgres", "dsn": "postgresql://h:99999999/db"}}}, "metering.ledger.dsn"),
    ({"state": {"type": "memcached"}}, "state"),
])
def test_malformed_backends_are_refused_naming_the_key(sections: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        cfg(**sections)
    assert key in str(err.value)


@pytest.mark.parametrize("sections", [
    {"state": {"type": "redis", "url": "redis://:hunter2secret@h:6379/0"}},
    {"metering": {"ledger": {"type": "postgres", "dsn": "postgresql://app:hunter2secret@db/usage"}}},
])
def test_passwords_in_the_config_are_refused_and_never_echoed(sections: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as err:
        cfg(**sections)
    assert "password must not be written in the config" in str(err.value)
    assert "hunter2secret" not in str(err.value) and "hunter2secret" not in repr(err.value)


def test_urls_and_passwords_from_env() -> None:
    r = RedisState.model_validate({"type": "redis", "urlEnv": "MY_REDIS", "passwordEnv": "MY_PW"})
    env = {"MY_REDIS": "redis://cache:6379/1", "MY_PW": "p@ss/word"}
    url = r.resolve_url(env)
    assert url == "redis://:p%40ss%2Fword@cache:6379/1" and "p@ss" not in redact(url)
    with pytest.raises(SecretConfigError, match="MY_PW"):
        r.resolve_url({"MY_REDIS": "redis://cache:6379/1"})
    with pytest.raises(SecretConfigError, match="SUPERNODE_REDIS_URL"):
        RedisState.model_validate({"type": "redis"}).resolve_url({})
    p = PostgresLedgerConfig.model_validate({"type": "postgres"})
    env = {"SUPERNODE_POSTGRES_DSN": "postgresql://app:s3cretpw@db:5432/usage"}  # a whole DSN from a Secret is fine
    assert p.resolve_dsn(env).endswith("@db:5432/usage")
    with pytest.raises(SecretConfigError) as err:
        p.resolve_dsn({"SUPERNODE_POSTGRES_DSN": "postgresql://app:s3cretpw@db:notaport/usage"})
    assert "s3cretpw" not in str(err.value) and "dsnEnv" in str(err.value)


def test_redact() -> None:
    assert redact("postgresql://app:pw@db:5432/usage?sslmode=require") == "postgresql://app:***@db:5432/usage"
    assert redact("redis://:pw@cache:6379/0") == "redis://***@cache:6379/0"


def test_the_fleet_example_config_parses() -> None:
    import yaml

    from supernode.router.config import RouterConfig

    path = Path(__file__).resolve().parents[2] / "examples" / "router" / "router-fleet.yaml"
    config = RouterConfig.model_validate(yaml.safe_load(path.read_text()))
    assert config.state.type == "redis" and config.metering.ledger.type == "postgres"
