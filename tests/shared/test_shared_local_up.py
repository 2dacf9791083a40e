"""`supernode up --router-replicas N --redis URL --postgres DSN`: config, env and refusals (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supernode.cli.local.fleet import check_shared
from supernode.cli.local.routerconf import router_config, shared_env
from supernode.cli.main import build_parser
from supernode.router.config import parse_config
from supernode.router.shared.config import PostgresLedgerConfig, RedisState

ROOT = Path(__file__).resolve().parents[2]


def test_up_parses_the_shared_state_flags() -> None:
    args = build_parser().parse_args(["up", "a.yaml", "--router-replicas", "3", "--redis", "redis://:pw@h:6379/0",
                                      "--postgres", "postgresql://u:pw@db/x"])
    assert (args.router_replicas, args.redis, args.postgres) == (3, "redis://:pw@h:6379/0", "postgresql://u:pw@db/x")


def test_router_config_takes_secrets_from_env_only(tmp_path: Path) -> None:
    cfg = router_config([], state_dir=tmp_path, port=8080, tenants=None, redis=True, postgres=True)
    assert "pw" not in str(cfg)
    parsed = parse_config(cfg)
    assert isinstance(parsed.state, RedisState) and parsed.state.url is None
    assert parsed.metering is not None and isinstance(parsed.metering.ledger, PostgresLedgerConfig)
    env = shared_env("redis://:pw@h:6379/0", "postgresql://u:pw@db/x")
    assert parsed.state.resolve_url(env) == "redis://:pw@h:6379/0"
    assert parsed.metering.ledger.resolve_dsn(env) == "postgresql://u:pw@db/x"
    other = router_config([], state_dir=tmp_path / "b", port=8080, tenants=None, redis=True, postgres=True)
    assert other["state"]["keyPrefix"] != cfg["state"]["keyPrefix"]  # two stacks may share one Redis


def test_several_replicas_need_shared_state(tmp_path: Path) -> None:
    local = parse_config(router_config([], state_dir=tmp_path, port=1, tenants=None))
    assert "state.type: redis" in check_shared(local, 3) and check_shared(local, 1) == ""
    half = parse_config(router_config([], state_dir=tmp_path, port=1, tenants=None, redis=True))
    assert "postgres" in check_shared(half, 2)
    full = parse_config(router_config([], state_dir=tmp_path, port=1, tenants=None, redis=True, postgres=True))
    assert check_shared(full, 3) == ""


def test_up_refuses_replicas_without_shared_state(tmp_path: Path) -> None:
    from supernode.cli.local.runtime import UpOptions, prepare
    from supernode.cli.local.specs import SpecError

    examples = ROOT / "examples" / "local"
    files = [str(p) for p in sorted(examples.glob("*.yaml")) if p.name != "tenants.yaml"][:1]
    opts = UpOptions(files=files, state_dir=str(tmp_path), port=0, router_replicas=3, redis="redis://h:1/0")
    with pytest.raises(SpecError, match="--router-replicas 3 needs --redis URL and --postgres DSN"):
        prepare(opts, out=lambda _: None)
