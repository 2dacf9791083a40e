"""The lazily computed byte hashes equal the eager ones however they are read, and compute only what is read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from supernode.api.endpoints import Endpoint
from supernode.api.models import Mode
from supernode.router.apis.openai import parse_chat
from supernode.router.config import RouterConfig
from supernode.router.pipeline import prepare, prepare_off_loop
from supernode.router.routing.prefix_index import LazyRequestHashes, request_hashes
from supernode.router.routing.state import HOME_KEY_BLOCKS, EndpointTable, RoutingRequest

TEXT = "system prompt: be brief. " * 40 + "question?"


@pytest.mark.parametrize("text,max_blocks", [(TEXT, 1000), (TEXT, 3), ("short", 1000), ("", 1000)])
def test_lazy_equals_eager(text: str, max_blocks: int) -> None:
    eager = request_hashes("m", text, block_size=8, max_blocks=max_blocks)
    assert tuple(LazyRequestHashes("m", text, block_size=8, max_blocks=max_blocks)) == eager
    lazy = LazyRequestHashes("m", text, block_size=8, max_blocks=max_blocks)
    assert bool(lazy) == bool(eager)
    assert lazy[:2] == eager[:2]
    assert len(lazy) == len(eager)
    assert lazy[1:-1] == eager[1:-1] and lazy[::2] == eager[::2]
    if eager:
        assert lazy[-1] == eager[-1] and lazy[0] == eager[0]
    with pytest.raises(IndexError):
        lazy[len(eager)]


def test_reads_compute_only_the_prefix_needed() -> None:
    lazy = LazyRequestHashes("m", TEXT, block_size=8, max_blocks=1000)
    req = RoutingRequest("r", "m", Mode.NON_THINK, lazy)
    eager = RoutingRequest("r", "m", Mode.NON_THINK, request_hashes("m", TEXT, block_size=8, max_blocks=1000))
    assert req.routing_key == eager.routing_key
    assert len(lazy._done) == HOME_KEY_BLOCKS  # the tie-break seed read four blocks, not the ~100
    it = iter(lazy)
    assert next(it) == eager.block_hashes[0] and len(lazy._done) == HOME_KEY_BLOCKS
    assert list(lazy) == list(eager.block_hashes) and lazy._more is None


def test_prepare_leaves_them_lazy_and_the_worker_thread_variant_computes_them() -> None:
    config = RouterConfig.model_validate({"discovery": {"type": "static", "path": "unused.json"}, "admission": None})
    table = EndpointTable()
    table.update([Endpoint(url="http://127.0.0.1:9", model="m")])
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": TEXT}]}).encode()
    kw: dict[str, Any] = {"anthropic": False, "config": config, "table": table, "session_header": None}
    lazy, eager = prepare(raw, parse_chat, **kw), prepare_off_loop(raw, parse_chat, **kw)
    assert isinstance(lazy.block_hashes, LazyRequestHashes) and isinstance(eager.block_hashes, LazyRequestHashes)
    assert lazy.block_hashes._done == [] and eager.block_hashes._more is None
    prefix = config.routing.prefix
    want = request_hashes("m", lazy.parsed.prompt_text, block_size=prefix.block_size,
                          max_blocks=prefix.max_blocks_per_request)
    assert tuple(lazy.block_hashes) == tuple(eager.block_hashes) == want and want
