"""Issue 10, HTTP robustness and exposure, against real servers on 127.0.0.1: bad bodies are 400s in
each API's shape, a huge prompt is refused unread while others are served, connection floods are
bounded in count and time, /metrics and /docs are not on the public port, no addresses in headers."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_engine import Behaviour
from router_stack import MODEL, Stack, ep

from supernode.api import constants as C
from supernode.router.admission.tenants import TenantsFileError, hash_key
from supernode.router.admission.testing import tenant, tenants_file
from supernode.router.app import create_app
from supernode.router.config import RouterConfig

ADMIN = "sk-admin-http"
ONE = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
BAD_BODIES: list[tuple[str, bytes]] = [
    ("lone surrogate", b'"content": "\\ud800"'),
    ("lone surrogate in a key", b'"content": "x", "\\udfff": 1'),
    ("non-finite NaN", b'"content": "x", "temperature": NaN'),
    ("non-finite Infinity", b'"content": "x", "top_p": -Infinity'),
    ("float overflow", b'"content": "x", "temperature": 1e999'),
    ("huge integer", b'"content": "x", "seed": ' + b"9" * 5000),
    ("deep nesting", b'"content": "x", "metadata": ' + b"[" * 100_000 + b"]" * 100_000),
    ("invalid UTF-8", b'"content": "\xff\xfe"'),
]


def body(api: str, message: bytes) -> bytes:
    extra = b'"max_tokens": 5, ' if api == "messages" else b""
    if api == "completions":
        fields = message.replace(b'"content": ', b'"suffix": ')
        return b'{"model": "' + MODEL.encode() + b'", "prompt": "p", ' + fields + b"}"
    return b'{"model": "' + MODEL.encode() + b'", ' + extra + b'"messages": [{"role": "user", ' + message + b"}]}"


@pytest.mark.parametrize("api", ["chat/completions", "completions", "messages"])
async def test_bad_bodies_are_400_in_the_api_own_shape(stack: Stack, api: str) -> None:
    engine = await stack.engine("e")
    stack.write_endpoints([ep(engine)])
    url = await stack.router()
    async with httpx.AsyncClient(timeout=10) as h:
        for name, message in BAD_BODIES:
            r = await h.post(f"{url}/v1/{api}", content=body(api, message),
                             headers={"content-type": "application/json"})
            assert r.status_code == 400, (name, r.status_code, r.text[:300])
            data = r.json()
            if api == "messages":
                assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", name
            else:
                assert data["error"]["type"] == "invalid_request_error", name
    assert stack.engines["e"].requests == []  # none of it reached the engine


async def test_admin_query_parameters_like_nan_are_400(stack: Stack, tmp_path: Path) -> None:
    tenants_file(tenant("a").key("ka")).write(tmp_path / "t.yaml")
    stack.write_endpoints([])
    url = await stack.router({"admission": {"tenants_file": str(tmp_path / "t.yaml"),
                                            "admin": {"key_sha256": hash_key(ADMIN)}},
                              "metering": {"ledger_path": str(tmp_path / "u.sqlite3")}})
    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {ADMIN}"}) as h:
        for params in ({"from": "nan"}, {"to": "inf"}, {"from": "-1e400"}, {"from": "1e300"}, {"to": "99999-01-01"},
                       {"limit": "nan"}, {"limit": "1" * 400}, {"from": "\x00"}, {"to": "2024-13-45"}):
            r = await h.get(f"{url}/admin/usage", params=params)
            assert r.status_code == 400, (params, r.status_code, r.text)
        assert (await h.get(f"{url}/admin/usage", params={"from": "0", "to": "2030-01-01"})).status_code == 200


async def test_metrics_and_docs_are_off_the_public_port_and_no_address_in_headers(stack: Stack) -> None:
    engine = await stack.engine("e")
    stack.write_endpoints([ep(engine)])
    url = await stack.router()
    async with httpx.AsyncClient(timeout=10) as h:
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
            assert (await h.get(f"{url}{path}")).status_code == 404, path
        assert "supernode_router_requests_total" in (await h.get(f"{stack.metrics_url}/metrics")).text
        assert (await h.get(f"{stack.metrics_url}/health")).status_code == 200
        r = await h.post(f"{url}/v1/chat/completions", json=ONE)
        assert r.status_code == 200
        headers = " ".join(f"{k}: {v}" for k, v in r.headers.items())
        assert "127.0.0.1" not in headers and "http" not in r.headers[C.HEADER_ENDPOINT]
        assert r.headers[C.HEADER_ENDPOINT].endswith("/0") and "server" not in r.headers  # the group, by name


async def test_without_an_ops_port_metrics_need_the_admin_key_and_docs_can_be_turned_on(stack: Stack) -> None:
    stack.write_endpoints([])
    url = await stack.router({"server": {"metrics_port": None, "docs": True},
                              "admission": {"anonymous": True, "admin": {"key_sha256": hash_key(ADMIN)}}})
    async with httpx.AsyncClient(timeout=10) as h:
        assert (await h.get(f"{url}/metrics")).status_code == 401
        assert (await h.get(f"{url}/metrics", headers={"authorization": "Bearer nope"})).status_code == 403
        ok = await h.get(f"{url}/metrics", headers={"authorization": f"Bearer {ADMIN}"})
        assert ok.status_code == 200 and "supernode_router" in ok.text
        assert (await h.get(f"{url}/openapi.json")).status_code == 200


def test_a_router_configured_with_a_missing_tenants_file_refuses_to_start(tmp_path: Path) -> None:
    config = RouterConfig.model_validate({"discovery": {"type": "static", "path": str(tmp_path / "e.json")},
                                          "admission": {"tenants_file": str(tmp_path / "absent.yaml")}})
    with pytest.raises(TenantsFileError, match="missing"):
        create_app(config)


async def test_an_8mb_prompt_is_refused_unread_while_another_tenant_is_served(stack: Stack, tmp_path: Path) -> None:
    tenants_file(tenant("big").key("k-big"), tenant("small").key("k-small")).write(tmp_path / "t.yaml")
    engine = await stack.engine("e", Behaviour(name="e", answer_words=20, chunk_delay_s=0.01))
    stack.write_endpoints([ep(engine)])
    url = await stack.router({"server": {"max_body_bytes": 16 * 1024 * 1024},
                              "models": {"context_tokens": {MODEL: 65_536}},  # at most 4 MiB of prompt text
                              "admission": {"tenants_file": str(tmp_path / "t.yaml")}})
    small = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    huge = {"model": MODEL, "messages": [{"role": "user", "content": "a" * (8 * 1024 * 1024)}]}

    async def timed(h: httpx.AsyncClient, key: str, payload: dict[str, Any]) -> tuple[float, httpx.Response]:
        t0 = time.perf_counter()
        r = await h.post(f"{url}/v1/chat/completions", json=payload, headers={"authorization": f"Bearer {key}"})
        return time.perf_counter() - t0, r

    async with httpx.AsyncClient(timeout=30) as h:
        normal = min([(await timed(h, "k-small", small))[0] for _ in range(3)])
        (t_small, r_small), (_, r_big) = await asyncio.gather(timed(h, "k-small", small), timed(h, "k-big", huge))
    assert r_small.status_code == 200 and r_big.status_code == 400, r_big.text[:200]
    assert "context" in r_big.json()["error"]["message"] and r_big.json()["error"]["param"] == "messages"
    assert t_small < normal + 1.0, f"the small request took {t_small:.2f}s beside the 8 MB one (alone {normal:.2f}s)"
    assert len(stack.engines["e"].requests) == 4  # the 8 MB prompt never reached the engine


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return s


async def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(s, 4096), within)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_a_connection_flood_is_bounded_in_count_and_time(stack: Stack) -> None:
    engine = await stack.engine("e")
    stack.write_endpoints([ep(engine)])
    url = await stack.router({"server": {"max_connections": 20, "overflow_connections": 10,
                                         "header_timeout_s": 0.5, "keepalive_timeout_s": 1}})
    port = int(url.rsplit(":", 1)[1])
    idle = [_connect(port) for _ in range(24)]  # never send a byte
    slow = _connect(port)
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")  # and never finish the headers
    await asyncio.sleep(0.05)
    async with httpx.AsyncClient(timeout=5) as h:
        busy = await h.post(f"{url}/v1/chat/completions", json=ONE)
        assert busy.status_code == 503  # beyond max_connections: a clear 503, not a hang
        assert (await h.get(f"{url}/health")).status_code == 200  # probes still answer on the API port
        more = [_connect(port) for _ in range(40)]  # beyond max + overflow: closed at once
        assert sum([await _closed_by_server(s, 0.2) for s in more]) >= 35
        assert (await h.get(f"{stack.metrics_url}/health")).status_code == 200  # the ops port keeps answering
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_closed_by_server(s, 3) for s in [*idle, slow]))
    assert all(results) and time.perf_counter() - t0 < 2.5  # the header deadline (0.5 s) closed them all
    for s in [*idle, slow, *more]:
        s.close()
    async with httpx.AsyncClient(timeout=5) as h:
        assert (await h.post(f"{url}/v1/chat/completions", json=ONE)).status_code == 200
        big = await h.get(f"{url}/health", headers={"x-pad": "a" * 40_000})
        assert big.status_code == 431


async def test_idle_keepalive_connections_are_closed(stack: Stack) -> None:
    stack.write_endpoints([])
    url = await stack.router({"server": {"keepalive_timeout_s": 1}})
    s = _connect(int(url.rsplit(":", 1)[1]))
    s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.sleep(0.1)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    t0 = time.perf_counter()
    assert await _closed_by_server(s, 3) and time.perf_counter() - t0 < 2.5
    s.close()


async def test_no_api_key_is_logged(stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tenants_file(tenant("a").key("sk-secret-key-123")).write(tmp_path / "t.yaml")
    engine = await stack.engine("e")
    stack.write_endpoints([ep(engine)])
    with caplog.at_level(logging.DEBUG, logger="supernode"):
        url = await stack.router({"admission": {"tenants_file": str(tmp_path / "t.yaml")}})
        async with httpx.AsyncClient(timeout=10) as h:
            for key in ("sk-secret-key-123", "sk-wrong-key-456"):
                await h.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=ONE)
    assert caplog.records and "sk-secret" not in caplog.text and "sk-wrong" not in caplog.text
