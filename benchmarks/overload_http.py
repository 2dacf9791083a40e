"""The overload scenario through the real router over HTTP on 127.0.0.1 (used by router_overload.py).

One fake engine (tests/router/fake_engine.py) with ``slots`` concurrent slots and a FIFO queue of its
own behind them (like a real engine's waiting queue), the real router app in front with admission
configured (tenants, fair priority queue bounded by the engine's capacity) and throttling on or off.
Clients give up at the bound (their patience); the engine keeps working on abandoned requests.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "router"))

from fake_engine import Behaviour, create_engine_app

from supernode.router.app import create_app
from supernode.router.config import RouterConfig

MODEL = "deepseek-v4-flash"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16,
        "thinking": {"type": "disabled"}}  # fmt: skip


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


async def run_http(
    *, throttling: bool, tenants_path: Path, tmp: Path, slots: int, service: float, load: float, bound: float,
    seconds: float, premium_share: float, seed: int,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    words = 6
    engine = create_engine_app(Behaviour(name="e", concurrency=slots, decode_s=service / words, answer_words=words))
    servers = [await _serve(engine)]
    eurl = servers[0][2]
    (tmp / "endpoints.json").write_text(
        f'{{"endpoints": [{{"url": "{eurl}", "model": "{MODEL}", "maxConcurrency": {slots}}}]}}'
    )
    cfg = RouterConfig.model_validate(
        {
            "discovery": {"type": "static", "path": str(tmp / "endpoints.json")},
            "health": {"scrape_interval_s": 0},
            "timeouts": {"total_s": 120, "keepalive_s": 30},
            "admission": {
                "tenants_file": str(tenants_path),
                "throttling": throttling,
                "queue": {"max_wait_seconds": max(0.1, bound - 2 * service), "dispatch_interval_seconds": 0},
            },
            "metering": {"ledger_path": str(tmp / f"usage-{throttling}.db")},
        }
    )
    servers.append(await _serve(create_app(cfg)))
    rurl = servers[1][2]
    rng = random.Random(seed)
    outs: dict[str, dict[str, Any]] = {t: {"ok": 0, "late": 0, "rejected": 0, "lat": []} for t in ("premium", "free")}

    async def one(client: httpx.AsyncClient, key: str, tier: str) -> None:
        start = time.monotonic()
        o = outs[tier]
        try:
            async with asyncio.timeout(bound):
                r = await client.post(
                    f"{rurl}/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
                )
        except TimeoutError:
            o["late"] += 1
            return
        if r.status_code == 200:
            o["ok"] += 1
            o["lat"].append(time.monotonic() - start)
        elif r.status_code == 429:
            o["rejected"] += 1
        else:
            raise RuntimeError(f"unexpected {r.status_code}: {r.text[:200]}")

    rate = load * slots / service
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=bound * 4, limits=limits) as client:
        tasks = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            await asyncio.sleep(rng.expovariate(rate))
            if rng.random() < premium_share:
                tasks.append(asyncio.create_task(one(client, f"k-p{rng.randrange(2)}", "premium")))
            else:
                tasks.append(asyncio.create_task(one(client, f"k-f{rng.randrange(4)}", "free")))
        await asyncio.gather(*tasks)
    for server, _, _ in reversed(servers):
        server.should_exit = True
    await asyncio.gather(*(t for _, t, _ in servers), return_exceptions=True)
    return outs
