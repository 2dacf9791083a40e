"""Tenants file: parsing, hashed keys, errors that name the field, live reload."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from supernode.router.admission import AdmissionConfig, build_gatekeeper
from supernode.router.admission.tenants import TenantsFileError, hash_key, load_directory, parse_tenants
from supernode.router.admission.testing import StaticCapacity, tenant, tenants_file
from supernode.router.contracts import ANONYMOUS
from supernode.router.errors import AuthError


def two_tenants() -> object:
    return tenants_file(
        tenant("acme").tier("premium").key("sk-acme-1", "ci").rpm(60).tpm(10000).concurrency(4),
        tenant("bob").tier("free").key("sk-bob-1").quota(1000),
    )


def test_keys_map_to_tenants_with_tier_priority(tmp_path: Path) -> None:
    d = load_directory(two_tenants().write(tmp_path / "t.yaml"))  # type: ignore[attr-defined]
    acme = d.authenticate("sk-acme-1")
    assert (acme.id, acme.tier, acme.priority) == ("acme", "premium", 0)
    assert d.authenticate("sk-bob-1").priority == 2


def test_json_file_is_accepted(tmp_path: Path) -> None:
    d = load_directory(two_tenants().write(tmp_path / "t.json", fmt="json"))  # type: ignore[attr-defined]
    assert d.authenticate("sk-bob-1").id == "bob"


@pytest.mark.parametrize("key", [None, "", "sk-nobody", "sk-acme-1 "])
def test_unknown_or_missing_key_is_401(tmp_path: Path, key: str | None) -> None:
    d = load_directory(two_tenants().write(tmp_path / "t.yaml"))  # type: ignore[attr-defined]
    with pytest.raises(AuthError) as exc:
        d.authenticate(key)
    assert exc.value.status == 401


def test_missing_file_disables_auth(tmp_path: Path) -> None:
    assert load_directory(tmp_path / "absent.yaml").authenticate("anything") is ANONYMOUS
    assert load_directory(None).authenticate(None) is ANONYMOUS


def test_a_configured_but_missing_tenants_file_refuses_to_start(tmp_path: Path) -> None:
    """Issue 10: auth is never turned off because the tenants file is missing."""
    with pytest.raises(TenantsFileError, match="missing"):
        build_gatekeeper(AdmissionConfig(tenants_file=tmp_path / "absent.yaml"), StaticCapacity())


def test_auth_is_off_only_when_anonymous_is_set(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="anonymous"):
        AdmissionConfig.model_validate({})
    with pytest.raises(ValueError, match="contradict"):
        AdmissionConfig.model_validate({"tenantsFile": "t.yaml", "anonymous": True})
    with caplog.at_level(logging.WARNING):
        gate = build_gatekeeper(AdmissionConfig(anonymous=True), StaticCapacity())
    assert "AUTH DISABLED" in caplog.text and gate.authenticate(None) is ANONYMOUS


def test_describe_has_no_secrets(tmp_path: Path) -> None:
    d = load_directory(two_tenants().write(tmp_path / "t.yaml"))  # type: ignore[attr-defined]
    text = repr(d.describe())
    assert hash_key("sk-acme-1") not in text and "sk-acme-1" not in text
    assert {"prefix": "sk-acme-", "name": "ci"} in d.describe()[0]["keys"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("tenants: [{id: a, tier: gold}]", "unknown tier 'gold'"),
        ("tenants: [{id: a, rpm: -1}]", "tenants.0.rpm"),
        ("tenants: [{id: a, keys: [{sha256: abc}]}]", "tenants.0.keys.0.sha256"),
        ("tenants: [{id: a, bogus: 1}]", "tenants.0.bogus"),
        ("tenants: [{id: a}, {id: a}]", "duplicate tenant id 'a'"),
        ("tenants: [{id: a, allowedModes: [fast]}]", "tenants.0.allowedModes.0"),
        ("[1, 2]", "expected a mapping"),
        ("tenants: [unclosed", "not valid YAML"),
    ],
)
def test_bad_files_name_the_problem(text: str, field: str) -> None:
    with pytest.raises(TenantsFileError) as exc:
        parse_tenants(text, source="t.yaml")
    assert field in str(exc.value) and "t.yaml" in str(exc.value)


def test_a_key_cannot_belong_to_two_tenants() -> None:
    h = hash_key("k")
    with pytest.raises(TenantsFileError, match="already belongs"):
        parse_tenants(f"tenants: [{{id: a, keys: [{{sha256: {h}}}]}}, {{id: b, keys: [{{sha256: {h}}}]}}]")


def test_example_tenants_file_parses() -> None:
    path = Path(__file__).parents[2] / "examples" / "tenants" / "tenants.yaml"
    d = load_directory(path)
    assert d.authenticate("sk-local-acme-premium").tier == "premium"
    assert d.authenticate("sk-local-bob-free").tier == "free"


def _secret_mount(root: Path, content: str, version: int) -> Path:
    """Mimic a kubelet Secret/ConfigMap volume: tenants.yaml → ..data/tenants.yaml, ..data → ..vN."""
    data = root / f"..v{version}"
    data.mkdir()
    (data / "tenants.yaml").write_text(content)
    tmp = root / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, root / "..data")
    link = root / "tenants.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/tenants.yaml")
    return link


@pytest.mark.looptime
async def test_live_reload_from_a_secret_mount(tmp_path: Path) -> None:
    v1 = tenants_file(tenant("acme").key("sk-old")).obj()
    v2 = tenants_file(tenant("acme").key("sk-new"), tenant("bob").key("sk-bob")).obj()
    import yaml

    path = _secret_mount(tmp_path, yaml.safe_dump(v1), 1)
    gate = build_gatekeeper(AdmissionConfig(tenants_file=path, tenants_reload_seconds=2), StaticCapacity())
    await gate.start()
    try:
        assert gate.authenticate("sk-old").id == "acme"
        _secret_mount(tmp_path, yaml.safe_dump(v2), 2)
        await asyncio.sleep(2.5)
        assert gate.authenticate("sk-new").id == "acme"
        assert gate.authenticate("sk-bob").id == "bob"
        with pytest.raises(AuthError):
            gate.authenticate("sk-old")
        _secret_mount(tmp_path, "tenants: [{id: x, tier: nope}]", 3)  # a bad update keeps the old tenants
        await asyncio.sleep(2.5)
        assert gate.authenticate("sk-bob").id == "bob"
        assert (
            gate.metrics.registry.get_sample_value(
                "supernode_router_admission_tenants_reloads_total", {"result": "error"}
            )
            == 1
        )
    finally:
        await gate.stop()


async def test_stop_is_idempotent_and_cancels_tasks(tmp_path: Path) -> None:
    path = tenants_file(tenant("a")).write(tmp_path / "t.yaml")
    gate = build_gatekeeper(AdmissionConfig(tenants_file=path, tenants_reload_seconds=1), StaticCapacity())
    await gate.start()
    await gate.start()
    tasks = list(gate._tasks)
    assert len(tasks) == 2
    await gate.stop()
    await gate.stop()
    assert all(t.done() for t in tasks)


def test_hash_key_helper_prints_a_tenants_entry(capsys: pytest.CaptureFixture[str]) -> None:
    from supernode.router.admission.hash_key import main

    assert main(["sk-local-bob-free"]) == 0
    out = capsys.readouterr().out
    assert hash_key("sk-local-bob-free") in out and "sk-local-bob-free" not in out.replace("'sk-local'", "")
    parsed = parse_tenants(
        "tenants:\n  - id: bob\n    keys:\n" + "".join("      " + line + "\n" for line in out.splitlines())
    )
    assert parsed.tenants[0].keys[0].prefix == "sk-local"


@pytest.mark.looptime
async def test_a_tenants_file_that_disappears_never_turns_auth_off(tmp_path: Path) -> None:
    path = tenants_file(tenant("a").key("sk-a")).write(tmp_path / "tenants.yaml")
    gate = build_gatekeeper(AdmissionConfig(tenants_file=path, tenants_reload_seconds=1), StaticCapacity())
    await gate.start()
    try:
        path.unlink()
        await asyncio.sleep(1.5)
        with pytest.raises(AuthError):
            gate.authenticate(None)
        assert gate.authenticate("sk-a").id == "a"
    finally:
        await gate.stop()


def test_an_unreadable_tenants_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(TenantsFileError, match="cannot read"):
        build_gatekeeper(AdmissionConfig(tenants_file=tmp_path / "dir.yaml"), StaticCapacity())


def test_require_tenants_file_is_accepted_and_always_holds(tmp_path: Path) -> None:
    cfg = AdmissionConfig(tenants_file=tmp_path / "absent.yaml", require_tenants_file=False)
    with pytest.raises(TenantsFileError, match="missing"):
        build_gatekeeper(cfg, StaticCapacity())
