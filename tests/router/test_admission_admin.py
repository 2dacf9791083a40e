"""The admin API over real HTTP semantics (ASGI): auth, usage export JSON/CSV, tenants, reload."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from supernode.router.admin import make_admin_key_check, make_admin_router
from supernode.router.admission import AdmissionConfig, build_gatekeeper
from supernode.router.admission.config import AdminConfig
from supernode.router.admission.tenants import hash_key
from supernode.router.admission.testing import StaticCapacity, tenant, tenants_file, usage_record
from supernode.router.metering import MeteringConfig, build_meter

T0 = 1_780_000_000.0
ADMIN = {"authorization": "Bearer sk-admin"}


@pytest.fixture
async def client(tmp_path: Path) -> Any:
    path = tenants_file(tenant("acme").tier("premium").key("sk-acme-secret").rpm(10), tenant("bob").key("sk-bob"))
    path.write(tmp_path / "t.yaml")
    gate = build_gatekeeper(AdmissionConfig(tenants_file=tmp_path / "t.yaml"), StaticCapacity())
    meter = build_meter(MeteringConfig(ledger_path=tmp_path / "u.db"))
    meter.record(usage_record("r1", "acme", prompt=100, cached=40, completion=10, at=T0))
    meter.record(usage_record("r2", "acme", prompt=50, completion=5, at=T0 + 3600))
    meter.record(usage_record("r3", "bob", prompt=7, completion=1, at=T0 + 60, status="error"))
    app = FastAPI()
    app.include_router(
        make_admin_router(meter, gate, make_admin_key_check(AdminConfig(keySha256=hash_key("sk-admin"))))
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        c.tenants_path = tmp_path / "t.yaml"  # type: ignore[attr-defined]
        yield c
    meter.close()


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"authorization": "Bearer nope"}, 403), ({"x-api-key": "sk-acme-secret"}, 403)]
)
async def test_admin_endpoints_need_the_admin_key(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    for method, url in (("GET", "/admin/usage"), ("GET", "/admin/tenants"), ("POST", "/admin/tenants/reload")):
        r = await client.request(method, url, headers=headers)
        assert r.status_code == status, url
        assert r.json()["error"]["code"] in ("invalid_api_key", "permission_denied")


async def test_x_api_key_header_works_too(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/tenants", headers={"x-api-key": "sk-admin"})).status_code == 200


async def test_usage_json_totals_and_rows(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/usage", headers=ADMIN, params={"tenant": "acme"})
    assert r.status_code == 200
    [tot] = r.json()["totals"]
    assert (tot["tenant"], tot["requests"], tot["prompt_tokens"], tot["cached_tokens"]) == ("acme", 2, 150, 40)
    assert "rows" not in r.json()
    r = await client.get("/admin/usage", headers=ADMIN, params={"view": "rows", "from": T0 + 1})
    assert [row["request_id"] for row in r.json()["rows"]] == ["r3", "r2"]


async def test_usage_time_range_accepts_iso_8601(client: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(T0 + 1800, UTC).isoformat().replace("+00:00", "Z")
    r = await client.get("/admin/usage", headers=ADMIN, params={"view": "rows", "to": iso})
    assert [row["request_id"] for row in r.json()["rows"]] == ["r1", "r3"]
    bad = await client.get("/admin/usage", headers=ADMIN, params={"from": "yesterday"})
    assert bad.status_code == 400 and "from" in bad.json()["error"]["message"]
    assert (await client.get("/admin/usage", headers=ADMIN, params={"format": "xml"})).status_code == 422


async def test_usage_csv(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/usage", headers=ADMIN, params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["tenant"], x["requests"], x["errors"]) for x in rows] == [("acme", "2", "0"), ("bob", "1", "1")]
    r = await client.get("/admin/usage", headers=ADMIN, params={"format": "csv", "view": "rows", "tenant": "bob"})
    [row] = list(csv.DictReader(io.StringIO(r.text)))
    assert row["request_id"] == "r3" and row["status"] == "error"


async def test_tenants_listing_has_no_secrets_and_reload(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/tenants", headers=ADMIN)
    body = r.text
    assert r.status_code == 200 and "sk-acme-secret" not in body and hash_key("sk-acme-secret") not in body
    assert [t["id"] for t in r.json()["tenants"]] == ["acme", "bob"]
    path: Path = client.tenants_path  # type: ignore[attr-defined]
    tenants_file(tenant("carol").key("sk-carol")).write(path)
    r = await client.post("/admin/tenants/reload", headers=ADMIN)
    assert r.json() == {"reloaded": True, "tenants": 1}
    path.write_text("tenants: [{id: x, tier: unknown}]")
    r = await client.post("/admin/tenants/reload", headers=ADMIN)
    assert r.status_code == 400 and "unknown tier" in r.json()["error"]["message"]
    assert [t["id"] for t in (await client.get("/admin/tenants", headers=ADMIN)).json()["tenants"]] == ["carol"]


async def test_no_admin_key_configured_disables_the_admin_api() -> None:
    check = make_admin_key_check(AdminConfig(keyEnv="SUPERNODE_TEST_UNSET_ADMIN"), environ={})
    from supernode.router.errors import ForbiddenError

    with pytest.raises(ForbiddenError, match="disabled"):
        check("anything")
    env_check = make_admin_key_check(AdminConfig(keyEnv="ADM"), environ={"ADM": "sk-x"})
    env_check("sk-x")
