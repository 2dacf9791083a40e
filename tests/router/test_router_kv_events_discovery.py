"""KV event addresses from discovery: the leader pods the operator renders for spec.engine.kvEvents
announce their publishers (named container ports), so every router replica follows the same ones;
static discovery files name them directly. SGLang's per-page events land in the router's chain."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from builders import MDBuilder, make_plan, operator_md

from supernode.api import constants as C
from supernode.api.hashing import block_hashes
from supernode.api.kv_events import decode_batch
from supernode.operator import builders, naming
from supernode.router.discovery.file import parse_endpoint_file
from supernode.router.discovery.kubernetes import endpoint_from_pod
from supernode.router.kv_events.apply import apply_batch
from supernode.router.kv_events.feeds import feed_plan, feed_source
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.state import EndpointState
from tests.api.test_api_kv_events_sglang import SgBlockRemoved, SgEventBatch, sglang_pages

URL, MODEL = "http://10.0.0.7:8000", "m"


def leader_pod(md: MDBuilder, ip: str = "10.0.0.7") -> dict[str, Any]:
    """The leader pod a StatefulSet controller makes from the operator's template, Running and Ready."""
    obj = md.obj()
    objs = builders.desired_objects(obj, make_plan(obj, [["n0"]]), naming.revision(obj), lws=False)
    template = next(o for o in objs if o["kind"] == "StatefulSet")["spec"]["template"]
    return {"metadata": {"name": "g0-0", "namespace": "llm", "labels": template["metadata"]["labels"],
                         "annotations": template["metadata"]["annotations"]},
            "spec": template["spec"],
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.mark.parametrize(("engine", "kv", "want"), [
    ("vllm", {"port": 6000, "replayPort": 6001}, ("tcp://10.0.0.7:6000", "tcp://10.0.0.7:6001")),
    ("sglang", {}, ("tcp://10.0.0.7:5557", "tcp://10.0.0.7:5558")),
    ("vllm", None, ("auto", "")),  # publishes nothing: approximate routing
    ("builtin", {}, ("auto", "")),  # its HTTP stream (snapshot resync) beats the ZMQ replay
])
def test_leader_pods_announce_the_publishers_the_operator_renders(
        engine: str, kv: dict[str, Any] | None, want: tuple[str, str]) -> None:
    md = operator_md().engine(engine)
    if kv is not None:
        md = md.kv_events(**kv)
    ep = endpoint_from_pod(leader_pod(md), None)
    assert ep is not None and ep.url == URL
    assert (ep.kv_events, ep.kv_events_replay) == want
    source = feed_source(EndpointState(ep), True)
    assert source[0] == {"auto": "http" if engine == "builtin" else "none"}.get(want[0], want[0])


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_data_parallel_leaders_announce_one_publisher_per_rank(engine: str) -> None:
    md = (operator_md().engine(engine).kv_events(port=6000, replayPort=6100).accelerator("nvidia-h200", 8)
          .parallelism(tensor=2, data=4))
    ep = endpoint_from_pod(leader_pod(md), None)
    assert ep is not None and ep.data_parallel_size == 4
    assert (ep.kv_events, ep.kv_events_replay) == ("tcp://10.0.0.7:6000", "tcp://10.0.0.7:6100")
    plan = feed_plan(EndpointState(ep), True)
    assert [src[:2] for src in plan.values()] == [(f"tcp://10.0.0.7:{6000 + r}", f"tcp://10.0.0.7:{6100 + r}")
                                                  for r in range(4)]
    pod = leader_pod(md)  # a rank port that is not where the engine binds it ends the run of ranks
    next(p for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "kv-events-2")["containerPort"] = 6500
    assert (ep2 := endpoint_from_pod(pod, None)) is not None and ep2.data_parallel_size == 2
    single = endpoint_from_pod(leader_pod(operator_md().engine(engine).kv_events()), None)
    assert single is not None and single.data_parallel_size == 1


def test_ipv6_pod_addresses_are_bracketed() -> None:
    ep = endpoint_from_pod(leader_pod(operator_md().engine("sglang").kv_events(), ip="fd00::7"), None)
    assert ep is not None and ep.url == "http://[fd00::7]:8000"
    assert (ep.kv_events, ep.kv_events_replay) == ("tcp://[fd00::7]:5557", "tcp://[fd00::7]:5558")


def test_a_publisher_without_a_replay_port_is_followed_without_replays() -> None:
    pod = leader_pod(operator_md().engine("vllm").kv_events())
    ports = pod["spec"]["containers"][0]["ports"]
    ports[:] = [p for p in ports if p["name"] != C.PORT_KV_REPLAY]
    ep = endpoint_from_pod(pod, None)
    assert ep is not None and (ep.kv_events, ep.kv_events_replay) == ("tcp://10.0.0.7:5557", "")


def test_static_discovery_files_name_the_publishers() -> None:
    (ep,) = parse_endpoint_file(
        "endpoints:\n- url: http://10.0.0.9:30000\n  model: m\n  engineType: sglang\n"
        "  kvEvents: tcp://10.0.0.9:5557\n  kvEventsReplay: tcp://10.0.0.9:5558\n", suffix=".yaml")
    assert feed_source(EndpointState(ep), True) == ("tcp://10.0.0.9:5557", "tcp://10.0.0.9:5558", "m")
    with pytest.raises(ValueError, match="kvEvents"):
        parse_endpoint_file('{"endpoints": [{"url": "http://x", "model": "m", "kvEvents": "zmq://x:1"}]}')


def test_sglang_pages_chain_into_the_routers_blocks() -> None:
    """One BlockStored per page, each naming the previous page: re-hashed from the tokens, the pages are the
    router's blocks; salted pages, lower tiers and a short last page match no plain prompt's block."""
    index, page = PreciseIndex(), 4
    first, last = sglang_pages(list(range(8)), page)  # a radix node of two pages
    second, _ = sglang_pages(list(range(8, 14)), page, parent=last, first_hash=2000)  # a child: a full + a short page
    salted, _ = sglang_pages(list(range(20, 24)), page, salt="tenant-a", first_hash=3000)
    cpu, _ = sglang_pages(list(range(30, 34)), page, medium="CPU_PINNED", first_hash=4000)
    payload = msgspec.msgpack.encode(SgEventBatch(1.0, [*first, *second, *salted, *cpu], attn_dp_rank=0))
    apply_batch(index, URL, MODEL, decode_batch(payload))
    assert index.match(URL, block_hashes(list(range(16)), MODEL, page)) == 3
    assert index.match(URL, block_hashes(list(range(20, 24)), MODEL, page)) == 0
    assert index.match(URL, block_hashes(list(range(30, 34)), MODEL, page)) == 0
    assert index.size(URL) == 4  # two + one full pages and the short one; nothing salted or off-device
    removed = msgspec.msgpack.encode(SgEventBatch(2.0, [SgBlockRemoved([1001, 2000, 2001], "GPU")]))
    apply_batch(index, URL, MODEL, decode_batch(removed))  # SGLang evicts a node's pages in one event
    assert index.match(URL, block_hashes(list(range(16)), MODEL, page)) == 1 and index.size(URL) == 1
