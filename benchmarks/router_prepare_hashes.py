"""Router benchmark: the approximate index's byte hashes on the routing path when every endpoint is precise.

The router hashes the prompt's UTF-8 bytes for its approximate prefix index. When it also tokenized the
prompt and every endpoint of the pool reports its KV blocks (precise), routing reads only the token block
hashes, and the byte hashes serve only the tie-break seed (the first few blocks). Two paths side by side in
one process, on the same requests (order alternating), each with its own routing profile (same seed):
- old: ``pipeline.prepare`` then the byte hashes of the whole prompt computed eagerly (the router before);
- new: ``pipeline.prepare`` with the byte hashes computed lazily, as far as a reader needs them.
Each path's timed step is prepare + the pick over the pool (the token block hashes are computed once per
prompt, outside the timing: equal for both). Every decision is checked equal between the two.

    python benchmarks/router_prepare_hashes.py [--iterations 200] [--sizes 2000,8000,32000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import MODEL, pct

from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.router.apis.openai import parse_chat
from supernode.router.config import RouterConfig
from supernode.router.pipeline import Prepared, prepare
from supernode.router.routing.prefix_index import request_hashes
from supernode.router.routing.profile import Profile, build_profile
from supernode.router.routing.state import EndpointTable, RoutingRequest

PATHS = ("old", "new")
ENDPOINTS = 8
TOKEN_BLOCK = 64
WORDS = ("cache", "router", "token", "prefix", "engine", "block", "model", "serve", "queue", "expert")


def prompt(tokens: int, rng: random.Random) -> str:
    """About ``tokens`` tokens of text (~4 bytes each), distinct per call."""
    return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(tokens // 2))


class Bench:
    def __init__(self) -> None:
        self.config = RouterConfig.model_validate({"discovery": {"type": "static", "path": "unused.json"},
                                                   "admission": None})
        self.table = EndpointTable()
        self.table.update([Endpoint(url=f"http://127.0.0.1:{9000 + i}", model=MODEL) for i in range(ENDPOINTS)])
        self.states = [s for i in range(ENDPOINTS) if (s := self.table.get(f"http://127.0.0.1:{9000 + i}"))]
        self.profiles: dict[str, Profile] = {p: build_profile(self.config.routing, seed=1) for p in PATHS}
        for profile in self.profiles.values():
            for s in self.states:
                profile.precise.set_precise(s.key, True)

    def prep(self, path: str, raw: bytes) -> Prepared:
        prep = prepare(raw, parse_chat, anthropic=False, config=self.config, table=self.table, session_header=None)
        if path == "old":  # the eager computation prepare() did before
            prefix = self.config.routing.prefix
            prep = replace(prep, block_hashes=request_hashes(prep.resolved.model, prep.parsed.prompt_text,
                                                             block_size=prefix.block_size,
                                                             max_blocks=prefix.max_blocks_per_request))
        return prep

    def request(self, text: str, turn: int) -> dict[str, float]:
        raw = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]}).encode()
        # Stand-in token ids (the tokenizer is not what is measured): one per 4 bytes of text.
        ids = [b for b in text.encode()[::4]]
        token_hashes = tuple(block_hashes(ids, MODEL, TOKEN_BLOCK))
        out: dict[str, float] = {}
        decisions = {}
        for path in PATHS if turn % 2 else PATHS[::-1]:
            t0 = time.process_time()
            prep = self.prep(path, raw)
            req = RoutingRequest(f"r{turn}", prep.resolved.model, prep.resolved.mode, prep.block_hashes, prep.session,
                                 token_block_hashes=token_hashes, prompt_tokens=len(ids))
            d = self.profiles[path].pick(req, self.states)
            out[path] = time.process_time() - t0
            assert d is not None
            decisions[path] = (d.endpoint.key, d.score, d.prefix_blocks, d.total_blocks, req.routing_key)
        if decisions["old"] != decisions["new"]:
            raise AssertionError(f"decisions differ: {decisions}")
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--sizes", default="2000,8000,32000", help="prompt sizes in tokens (~4 bytes each)")
    ap.add_argument("--smoke", action="store_true", help="a few iterations (the suite's run)")
    args = ap.parse_args()
    iterations = 5 if args.smoke else args.iterations
    bench, rng = Bench(), random.Random(7)
    print(f"{ENDPOINTS} precise endpoints, CPU time per request (prepare + pick), {iterations} requests per size")
    print(f"{'prompt':>8} {'old p50 us':>11} {'new p50 us':>11} {'old mean us':>12} {'new mean us':>12} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        runs = [bench.request(prompt(size, rng), i) for i in range(iterations)]
        old, new = ([r[p] * 1e6 for r in runs] for p in PATHS)
        ratio = sum(old) / sum(new)
        print(f"{size:>8} {pct(old, 50):>11.0f} {pct(new, 50):>11.0f} {sum(old) / len(old):>12.0f} "
              f"{sum(new) / len(new):>12.0f} {ratio:>6.2f}")
    print("ratio = old / new (mean CPU time); decisions equal on every request")


if __name__ == "__main__":
    main()
