"""Endpoint ejection: passive health with back-off re-admission, and leaders the operator fenced off."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from router_stack import MODEL, Stack, ep

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.router.discovery.kubernetes import endpoint_from_pod
from supernode.router.routing.state import Backoff, EndpointState, EndpointTable

BACKOFF = Backoff(base_s=1.0, max_s=8.0)


def state() -> EndpointState:
    return EndpointState(endpoint=Endpoint(url="http://10.0.0.1:8000", model="m"))


def test_ejected_after_consecutive_failures_and_not_readmitted_before_the_back_off() -> None:
    s = state()
    assert not s.record_failure(2, now=100.0, backoff=BACKOFF)
    assert s.record_failure(2, now=100.1, backoff=BACKOFF) and not s.healthy
    assert not s.record_failure(2, now=100.2, backoff=BACKOFF), "already out: not ejected twice"
    assert not s.record_success(1, now=100.5) and not s.healthy, "a success inside the back-off does not count"
    assert s.record_success(1, now=101.2) and s.healthy


def test_back_off_doubles_for_ejections_in_a_row_and_starts_over_after_a_healthy_stretch() -> None:
    s, now, delays = state(), 0.0, []
    for _ in range(5):
        s.record_failure(1, now=now, backoff=BACKOFF)
        delays.append(s.ejected_until - now)
        now = s.ejected_until
        assert s.record_success(1, now=now)
        now += 1.0  # fails again soon after re-admission
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    s.record_failure(1, now=now + 60, backoff=BACKOFF)  # a minute of good service since the last ejection
    assert s.ejected_until - (now + 60) == 1.0


def test_no_back_off_readmits_on_the_next_success() -> None:
    s = state()
    assert s.record_failure(1, now=5.0)
    assert s.record_success(1, now=5.0)


def leader(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "v4-g0-0", "namespace": "llm", "annotations": annotations,
                         "labels": {C.LABEL_ROLE: C.ROLE_LEADER, C.LABEL_DEPLOYMENT: "v4", C.LABEL_GROUP: "0",
                                    C.LABEL_MODEL: "m"}},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}


def test_a_fenced_leader_is_published_not_ready_and_counted_once() -> None:
    healthy = endpoint_from_pod(leader({}), None)
    fenced = endpoint_from_pod(leader({C.ANNOTATION_DEVICE_FAULT: "rebuild: sp0-n0/Ascend910-3: SeparateNPU"}), None)
    assert healthy is not None and healthy.ready and not healthy.fault
    assert fenced is not None and not fenced.ready and fenced.fault.startswith("rebuild")
    seen: list[str] = []
    table = EndpointTable(on_fault=lambda ep: seen.append(ep.fault))
    table.update([healthy])
    table.update([fenced])
    table.update([fenced])
    assert seen == [fenced.fault]


async def test_connection_errors_eject_an_endpoint_passively(stack: Stack) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens: connect refused
    good = await stack.engine("good")
    stack.write_endpoints([ep(dead), ep(good)])
    url = await stack.router({"health": {"scrape_interval_s": 0, "unhealthy_after": 1}})
    assert stack.router_app is not None
    table = stack.router_app.state.router.table
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    for i in range(20):  # until the dead one has been picked once (each time, the retry serves the request)
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}])
        if not table.get(dead).healthy:
            break
    assert not table.get(dead).healthy and table.get(dead).ejected_until > 0
    async with httpx.AsyncClient() as h:
        metrics = (await h.get(f"{stack.metrics_url}/metrics")).text
    assert 'supernode_router_endpoint_ejections_total{reason="errors"} 1.0' in metrics
