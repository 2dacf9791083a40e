"""KV events wired end to end: the real operator renders a group with spec.engine.kvEvents (SGLang in a
StatefulSet, vLLM over two pods in a LeaderWorkerSet, vLLM with two data-parallel ranks publishing apart),
the emulated cluster runs its pods, and two router
replicas — each with its own Kubernetes discovery and KV event feeds — find the leader's publisher on its
named ports and build the same precise index from the engine's batches (SGLang's one-token pages, vLLM's
8-token blocks, both cut into the router's 4-token blocks), without talking to each other. Everything
listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import fake_lws
import httpx
import msgspec
import pytest
from builders import operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.api.kv_events import BlockStored, KVEventBatch, encode_batch
from supernode.router.config import PrefixConfig
from supernode.router.discovery.kubernetes import KubernetesDiscovery
from supernode.router.kv_events.feeds import KVEventFeeds
from supernode.router.metrics import RouterMetrics
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.state import EndpointTable
from tests.api.test_api_kv_events_sglang import SgEventBatch, sglang_pages
from tests.router.test_router_dp_ranks import consecutive_ports
from tests.router.test_router_kv_events import Publisher

MDS = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/llm/{C.PLURAL}"
MODEL, BLOCK = "deepseek-v4-flash", 4  # the router's block size for the model (its tokenizer's)


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


def sglang_batch(tokens: list[int], rank: int = 0) -> bytes:
    pages, _ = sglang_pages(tokens, 1)  # SGLang's default page: one token
    return msgspec.msgpack.encode(SgEventBatch(0.0, pages, attn_dp_rank=rank))


def vllm_batch(tokens: list[int], rank: int = 0) -> bytes:
    hashes = block_hashes(tokens, "vllm-own-seed", 8)  # vLLM's own hashes, over its 8-token blocks
    return encode_batch(KVEventBatch(0.0, [BlockStored(list(hashes), None, tokens, 8, None, "GPU")], rank))


# (engine, LeaderWorkerSet mode, pods per group, data-parallel ranks, the engine's first batch of 16 cached
# tokens); with ranks, the last rank caches them and each rank publishes on the ports + its rank.
CASES = [("sglang", False, 1, 1, sglang_batch), ("vllm", True, 2, 1, vllm_batch), ("vllm", False, 1, 2, vllm_batch)]


@pytest.mark.parametrize(("engine", "lws", "pods", "ranks", "batch"), CASES,
                         ids=["sglang-statefulset", "vllm-lws-2-pods", "vllm-dp2-statefulset"])
async def test_router_replicas_follow_the_publisher_the_operator_wires(
        k8s: tuple[K8sEmulator, str], engine: str, lws: bool, pods: int, ranks: int,
        batch: Callable[[list[int], int], bytes]) -> None:
    emu, url = k8s
    emu.declare(MD_KIND, shortnames=["md"])
    cluster = FakeCluster(emu)
    if lws:
        await fake_lws.install(emu)
        cluster.controllers.append(fake_lws.FakeLws(emu, cluster.started).step)
    await cluster.add_nodes(*(node(f"n{i}", "sp-0") for i in range(pods)))
    pub_port = consecutive_ports(2 * ranks)
    replay_port = pub_port + ranks
    md = (operator_md().engine(engine).kv_events(port=pub_port, replayPort=replay_port)
          .accelerator("ascend-910c", 16).parallelism(tensor=16 * pods // ranks, data=ranks).dict())
    publishers = [Publisher(None, addresses=(f"tcp://127.0.0.1:{pub_port + r}", f"tcp://127.0.0.1:{replay_port + r}"))
                  for r in range(ranks)]
    async with AsyncExitStack() as stack:
        for publisher in publishers:
            stack.callback(publisher.close)
        await stack.enter_async_context(cluster.running())
        await stack.enter_async_context(running_operator(url))
        replicas = [await stack.enter_async_context(RouterReplica(url).running()) for _ in range(2)]
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.post(MDS, json=md)).status_code == 201
        leader = await eventually(lambda: emu.objects_of("pods", "", "llm", f"{C.LABEL_ROLE}={C.ROLE_LEADER}")[0],
                                  what="the group's leader pod")
        await eventually(lambda: len(emu.objects_of("pods", "", "llm")) == pods, what="every pod of the group")
        await emu.patch_object("pods", "llm", leader["metadata"]["name"], {"status": {
            "phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
            subresource="status")  # an address the feeds can reach
        want = (f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}")
        for r in replicas:
            await eventually(lambda r=r: [(e.kv_events, e.kv_events_replay) for e in r.endpoints] == [want],
                             what="the publisher announced by discovery")
        key = replicas[0].endpoints[0].url

        assert all(e.data_parallel_size == ranks for r in replicas for e in r.endpoints)
        await publishers[-1].send(batch(list(range(16)), ranks - 1))
        for _ in range(200):  # late joiners replay from batch 0; 10 s at most
            if all(r.index.is_precise(key) for r in replicas):
                break
            for rank, publisher in enumerate(publishers):
                await publisher.send(encode_batch(KVEventBatch(0.0, [], rank)))
            await asyncio.sleep(0.05)
        assert all(r.index.is_precise(key) for r in replicas), "the feeds never held the whole history"
        prompt = block_hashes(list(range(16)), MODEL, BLOCK)
        assert [r.index.match(key, prompt) for r in replicas] == [4, 4]  # 16 tokens: four router blocks
        if ranks > 1:  # held by the last rank only, in both replicas
            assert [r.index.rank_matches(key, prompt) for r in replicas] == [[0] * (ranks - 1) + [4]] * 2
