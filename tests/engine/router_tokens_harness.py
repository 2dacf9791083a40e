"""A built-in engine (HTTP app + loop, fake model) and a recorder of what the router computed, for the
router-tokenization tests (a module of its own: test modules do not import each other)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from supernode.engine.chat import ReasoningBudgets
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.app import ServerState, build_app
from supernode.engine.server.guard import Guards
from supernode.engine.tokenizer import Tokenizer
from supernode.router.pipeline import Prepared
from supernode.router.routing.state import RoutingRequest

MODEL = "deepseek-v4-flash"  # router_stack's
TOKEN = "engine-token-0123456789"
BLOCK = 4


class Engine:
    """The built-in engine's HTTP app and loop with a fake model (real paged KV cache and block manager)."""

    def __init__(self, tokenizer: Tokenizer, runner: Any, token: str | None = TOKEN) -> None:
        # The context is capped by the KV cache, as `supernode-engine serve` caps it: a prompt the cache cannot
        # hold is refused up front (400). Left at 4096 over a 256-token fake cache, such a prompt reached the
        # scheduler, which ends a sequence that can never fit at once ("length", no tokens, the model never run).
        context = min(4096, runner.num_kv_blocks * runner.block_size)
        self.engine = LLMEngine(runner, tokenizer, EngineOptions(MODEL, context, max_num_seqs=8), EngineMetrics(MODEL))
        self.state = ServerState(MODEL, self.engine.metrics, budgets=ReasoningBudgets(8, 8), guards=Guards(token=token))
        self.app = build_app(self.state)

    def registered(self) -> set[int]:
        return set(self.engine.blocks.cached_hashes())


@asynccontextmanager
async def running(engine: Engine, server_thread: Any) -> AsyncIterator[str]:
    engine.state.engine = engine.engine
    engine.engine.start()
    try:
        with server_thread(engine.app) as served:
            yield served.url
    finally:
        await asyncio.to_thread(engine.engine.stop)


def recorder(router_app: Any) -> tuple[list[Prepared], list[RoutingRequest]]:
    """What the router computed per request: its prepared request and the routing request it routed."""
    st = router_app.state.router
    preps: list[Prepared] = []
    routed: list[RoutingRequest] = []
    apply, open_ = st.tokens.apply, st.upstream.open

    async def recording_apply(prep: Prepared) -> Prepared:
        preps.append(await apply(prep))
        return preps[-1]

    async def recording_open(rreq: RoutingRequest, *args: Any, **kw: Any) -> Any:
        routed.append(rreq)
        return await open_(rreq, *args, **kw)

    st.tokens.apply, st.upstream.open = recording_apply, recording_open
    return preps, routed
