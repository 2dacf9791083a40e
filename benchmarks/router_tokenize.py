"""Router benchmark: what encoding prompts with the engine's tokenizer adds to the router's request path.

Two encoders side by side in one process, on the same requests (order alternating), each with its own cache:
- old: each missing text piece (message) encoded whole with ``encode_batch`` (the router before chunking);
- new: long pieces cut where the tokenizer splits anyway, chunks cached one by one and the missing ones
  encoded in one ``encode_batch_fast`` call (parallel, no offsets).
Both run the router's real step (``PromptTokens.apply``: render the shared DeepSeek template, encode, hash the
token blocks) after ``pipeline.prepare`` (strict JSON parse, validation, routing hashes), timed separately.
Every request's ids are checked equal between the two.

- cold: prompts of ~2k/8k/32k tokens whose text was never seen (system prompt, history, question);
- mix: a multi-turn service: next turns of running conversations, new conversations whose system prompt
  starts with a per-user header line, questions about documents of a knowledge base, 10% cold 2k prompts.

The tokenizer is DeepSeek-like (the DeepSeek V3 pre-tokenizer, byte-level BPE with a ~100k vocabulary
trained locally on generated prose/code/CJK/JSON; cached under ~/.cache/supernode-bench after the first run).

    python benchmarks/router_tokenize.py [--iterations 200] [--mix 600] [--sizes 2000,8000,32000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import MODEL, pct
from tokenize_workload import LegacyPromptTokenizer, Messages, Workload, bench_tokenizer, body

from supernode.api.chattemplate import TEMPLATE_ID
from supernode.api.constants import DEFAULT_BLOCK_SIZE
from supernode.api.endpoints import Endpoint
from supernode.api.prompttokens import PromptTokenizer, tokenizer_digest
from supernode.router.apis.openai import parse_chat
from supernode.router.config import RouterConfig
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import prepare
from supernode.router.routing.state import EndpointTable
from supernode.router.tokens.metrics import TokenMetrics
from supernode.router.tokens.model import ModelTokenizer
from supernode.router.tokens.service import PromptTokens

PATHS = ("old", "new")


class Bench:
    def __init__(self, tokenizers: dict[str, PromptTokenizer]) -> None:
        self.config = RouterConfig.model_validate({"discovery": {"type": "static", "path": "unused.json"},
                                                   "admission": None})
        self.table = EndpointTable()
        self.table.update([Endpoint(url="http://127.0.0.1:9", model=MODEL)])
        self.tokens: dict[str, PromptTokens] = {}
        for name, tok in tokenizers.items():
            service = PromptTokens(TokenMetrics(RouterMetrics().registry),
                                   max_blocks=self.config.routing.prefix.max_blocks_per_request)
            digest = tokenizer_digest(json.dumps(tok.spec))
            service.set(MODEL, ModelTokenizer(tok, MODEL, DEFAULT_BLOCK_SIZE, TEMPLATE_ID, digest, "file"))
            self.tokens[name] = service
        self.turn = 0

    async def request(self, messages: Messages) -> dict[str, float]:
        """One request through prepare, then through each path's tokenization: seconds (and CPU seconds)."""
        raw = json.dumps(body(MODEL, messages)).encode()
        t0 = time.perf_counter()
        prep = prepare(raw, parse_chat, anthropic=False, config=self.config, table=self.table, session_header=None)
        out = {"prepare": time.perf_counter() - t0}
        ids = {}
        self.turn += 1
        for name in PATHS if self.turn % 2 else PATHS[::-1]:
            t1, c1 = time.perf_counter(), time.process_time()
            done = await self.tokens[name].apply(prep)
            out[name], out[f"{name}_cpu"] = time.perf_counter() - t1, time.process_time() - c1
            ids[name] = done.prompt_token_ids
        if ids["old"] != ids["new"] or not ids["new"]:
            raise AssertionError("the two encoders disagree on a prompt's token ids")
        out["tokens"] = float(len(ids["new"] or ()))
        return out

    def close(self) -> None:
        for service in self.tokens.values():
            service.close()


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1e3:.3f}"


async def run_cold(bench: Bench, work: Workload, size: int, iterations: int) -> None:
    rows: dict[str, list[float]] = defaultdict(list)
    for i in range(iterations + 2):
        r = await bench.request(work.cold(size))
        if i >= 2:  # the first two warm the code paths
            for k, v in r.items():
                rows[k].append(v)
    old, new, base = rows["old"], rows["new"], rows["prepare"]
    print(f"{int(sum(rows['tokens']) / len(rows['tokens'])):>7} {ms(base, 50):>9} {ms(old, 50):>9}/{ms(old, 99):<8} "
          f"{ms(new, 50):>9}/{ms(new, 99):<8} {pct(old, 50) / pct(new, 50):>7.2f}x "
          f"{ms(rows['old_cpu'], 50):>8}/{ms(rows['new_cpu'], 50):<8} "
          f"{(pct(base, 50) + pct(old, 50)) / pct(base, 50):>8.2f}x "
          f"{(pct(base, 50) + pct(new, 50)) / pct(base, 50):>6.2f}x")


async def run_mix(bench: Bench, work: Workload, requests: int) -> None:
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i in range(requests + 20):
        kind, messages, reply = work.mixed()
        r = await bench.request(messages)
        if reply is not None:  # the new router caches the reply it relays before the client's next turn
            pending = bench.tokens["new"].remember_reply(MODEL, reply)
            if pending is not None:
                await asyncio.wrap_future(pending)
        if i >= 20:  # the first requests fill the caches, as a running router's are
            for key in (kind, "all"):
                for k, v in r.items():
                    rows[key][k].append(v)
    print(f"{'mix: kind':<17} {'share':>6} {'tokens':>7} {'old p50/p99 ms':>17} {'new p50/p99 ms':>17} "
          f"{'old/new p50':>11} {'CPU ms old/new p50':>19}")
    for kind, r in sorted(rows.items(), key=lambda kv: kv[0] == "all"):
        old, new = r["old"], r["new"]
        print(f"{kind:<17} {len(old) / requests:>6.0%} {pct(r['tokens'], 50):>7.0f} {ms(old, 50):>8}/{ms(old, 99):<8} "
              f"{ms(new, 50):>8}/{ms(new, 99):<8} {pct(old, 50) / pct(new, 50):>10.2f}x "
              f"{ms(r['old_cpu'], 50):>9}/{ms(r['new_cpu'], 50):<9}")
    print("mix: the new router also caches each relayed reply (in the background, between turns) that the next "
          "turn sends back")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200, help="cold prompts per size")
    ap.add_argument("--mix", type=int, default=600, help="requests of the service mix")
    ap.add_argument("--sizes", default="2000,8000,32000", help="approximate cold prompt sizes in tokens")
    ap.add_argument("--vocab", type=int, default=100_000, help="vocabulary of the trained tokenizer")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: a small tokenizer, few requests")
    args = ap.parse_args()
    iterations, requests, sizes = args.iterations, args.mix, [int(s) for s in args.sizes.split(",")]
    vocab, chars = args.vocab, max(2_000_000, args.vocab * 80)
    if args.smoke:
        iterations, requests, sizes, vocab, chars = 5, 40, [2000], 4000, 200_000
    raw, origin = bench_tokenizer(vocab, chars)
    old, new = LegacyPromptTokenizer(raw), PromptTokenizer(raw)
    bench, work = Bench({"old": old, "new": new}), Workload(new)
    print(f"tokenizer: DeepSeek-like byte-level BPE, vocabulary {raw.get_vocab_size()} ({origin}); "
          f"{work.chars_per_token:.2f} characters per token of the generated text; chunks of >= "
          f"{new.chunker.min_chars} characters ({new.chunker.family}); {os.cpu_count()} CPUs; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"cold (nothing cached), {iterations} prompts per size; ms added by tokenization (render + encode + hashes)")
    print(f"{'tokens':>7} {'prepare':>9} {'old p50/p99':>18} {'new p50/p99':>18} {'old/new':>8} "
          f"{'CPU old/new':>17} {'ratio old':>9} {'new':>6}")
    try:
        for size in sizes:
            asyncio.run(run_cold(bench, work, size, iterations))
        print("ratio = (prepare + tokenize) / prepare at p50; CPU = the process's CPU time per tokenization at p50 "
              "(the new path's encoding runs on several threads: its CPU can exceed its wall time)")
        asyncio.run(run_mix(bench, work, requests))
    finally:
        bench.close()
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
