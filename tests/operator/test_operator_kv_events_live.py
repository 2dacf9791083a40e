"""KV events wired end to end: the real operator renders an SGLang group with spec.engine.kvEvents, the
emulated cluster runs its leader pod, and two router replicas — each with its own Kubernetes discovery
and KV event feeds — find the leader's publisher on its named ports and build the same precise index
from SGLang-layout batches (one-token pages cut into the router's blocks), without talking to each
other. Everything listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import httpx
import msgspec
from builders import operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.router.config import PrefixConfig
from supernode.router.discovery.kubernetes import KubernetesDiscovery
from supernode.router.kv_events.feeds import KVEventFeeds
from supernode.router.metrics import RouterMetrics
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.state import EndpointTable
from tests.api.test_api_kv_events_sglang import SgEventBatch, sglang_pages
from tests.router.test_router_kv_events import Publisher

MDS = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/llm/{C.PLURAL}"
MODEL, BLOCK = "deepseek-v4-flash", 4  # the router's block size for the model (its tokenizer's)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class RouterReplica:
    """What one router process keeps for KV events: discovery → endpoint table → feeds → precise index."""

    def __init__(self, url: str):
        self.table, self.index, self.endpoints = EndpointTable(), PreciseIndex(), list[Endpoint]()
        self.feeds = KVEventFeeds(self.table, self.index, RouterMetrics(), PrefixConfig(),
                                  block_size_of=lambda _: BLOCK)
        self.discovery = KubernetesDiscovery(self.apply, namespace="llm", port_name=C.PORT_HTTP, default_port=8000,
                                             default_max_concurrency=8, api_url=url, debounce_s=0.02)

    def apply(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self.table.update(endpoints)
        self.feeds.sync()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RouterReplica]:
        async with aiohttp.ClientSession() as session:
            self.feeds.start(session)
            task = asyncio.create_task(self.discovery.run())
            try:
                yield self
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await self.feeds.close()


async def test_router_replicas_follow_the_publisher_the_operator_wires(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    emu.declare(MD_KIND, shortnames=["md"])
    cluster = FakeCluster(emu)
    await cluster.add_nodes(node("n0", "sp-0"))
    pub_port, replay_port = free_ports(2)
    md = (operator_md().engine("sglang").kv_events(port=pub_port, replayPort=replay_port)
          .accelerator("ascend-910c", 16).parallelism(tensor=16).dict())
    publisher = Publisher(None, addresses=(f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}"))
    async with AsyncExitStack() as stack:
        stack.callback(publisher.close)
        await stack.enter_async_context(cluster.running())
        await stack.enter_async_context(running_operator(url))
        replicas = [await stack.enter_async_context(RouterReplica(url).running()) for _ in range(2)]
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.post(MDS, json=md)).status_code == 201
        leader = await eventually(lambda: emu.objects_of("pods", "", "llm", f"{C.LABEL_ROLE}={C.ROLE_LEADER}")[0],
                                  what="the group's leader pod")
        await emu.patch_object("pods", "llm", leader["metadata"]["name"], {"status": {
            "phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
            subresource="status")  # an address the feeds can reach
        want = (f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}")
        for r in replicas:
            await eventually(lambda r=r: [(e.kv_events, e.kv_events_replay) for e in r.endpoints] == [want],
                             what="the publisher announced by discovery")
        key = replicas[0].endpoints[0].url

        pages, _ = sglang_pages(list(range(14)), 1)  # SGLang's default page: one token
        await publisher.send(msgspec.msgpack.encode(SgEventBatch(0.0, pages, attn_dp_rank=0)))
        for _ in range(200):  # late joiners replay from batch 0; 10 s at most
            if all(r.index.is_precise(key) for r in replicas):
                break
            await publisher.send(msgspec.msgpack.encode(SgEventBatch(0.0, [], attn_dp_rank=0)))
            await asyncio.sleep(0.05)
        assert all(r.index.is_precise(key) for r in replicas), "the feeds never held the whole history"
        prompt = block_hashes(list(range(16)), MODEL, BLOCK)
        assert [r.index.match(key, prompt) for r in replicas] == [3, 3]
