"""Router benchmark: what encoding prompts with the engine's tokenizer adds to the router's request path.

Three encoders side by side in one process, on the same requests (order rotating), each with its own cache:
- old: each missing text piece (message) encoded whole with ``encode_batch`` (the router before chunking);
- chunked: long pieces cut where the tokenizer splits anyway, chunks cached one by one and the missing ones
  encoded in one ``encode_batch_fast`` call (parallel, no offsets): the `tokenizers` library alone;
- fast: as chunked, with text encoded by ``supernode.api.fasttokens`` (C pre-tokenizer + BPE, pre-token cache).
All run the router's real step (``PromptTokens.apply``: render the shared DeepSeek template, encode, hash the
token blocks) after ``pipeline.prepare`` (strict JSON parse, validation, routing hashes), timed separately.
Every request's ids are checked equal between them.

Before measuring, each encoder encodes ``--warm-chars`` of other generated text, as a router that has served
traffic has (the library's own BPE cache, the fast encoder's pre-token cache); the prompts' text is new.
The generated language has a 120k-word Zipf lexicon and unbroken CJK runs, so a cold prompt still holds
many never-seen pre-tokens (the "new pre-tokens" column): harder than real text for the pre-token cache.

- cold: prompts of ~2k/8k/32k tokens whose text was never seen (system prompt, history, question);
- mix: a multi-turn service: next turns of running conversations, new conversations whose system prompt
  starts with a per-user header line, questions about documents of a knowledge base, 10% cold 2k prompts.

The tokenizer is DeepSeek-like (the DeepSeek V3 pre-tokenizer, byte-level BPE with a ~100k vocabulary
trained locally on generated prose/code/CJK/JSON; cached under ~/.cache/supernode-bench after the first run).

    python benchmarks/router_tokenize.py [--iterations 200] [--mix 600] [--sizes 2000,8000,32000]
                                         [--warm-chars 2000000] [--alone] [--smoke]
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
from tokenizers import Tokenizer

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
        fast = self.tokens["fast"].get(MODEL)
        encoder = fast.tokenizer.fast if fast is not None else None
        learned = encoder.cached_pieces if encoder is not None else 0
        names = list(self.tokens)
        for name in names[self.turn % len(names):] + names[:self.turn % len(names)]:
            await asyncio.sleep(0.003)  # the library's worker threads spin a moment after each call: let them park
            t1, c1 = time.perf_counter(), time.process_time()
            done = await self.tokens[name].apply(prep)
            out[name], out[f"{name}_cpu"] = time.perf_counter() - t1, time.process_time() - c1
            ids[name] = done.prompt_token_ids
        if len({ids[name] for name in names}) != 1 or not ids["fast"]:
            raise AssertionError("the encoders disagree on a prompt's token ids")
        out["tokens"] = float(len(ids["fast"] or ()))
        out["new_pretokens"] = float(encoder.cached_pieces - learned if encoder is not None else 0)
        return out

    def warm(self, work: Workload, chars: int) -> None:
        """Each encoder encodes ``chars`` of other text (not cached as prompt pieces)."""
        text = work.text(chars)
        for service in self.tokens.values():
            tok = service.get(MODEL)
            assert tok is not None
            for start in range(0, len(text), 20_000):
                tok.tokenizer.encode_text(text[start:start + 20_000])

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
    old, chunked, fast, base = rows["old"], rows["chunked"], rows["fast"], rows["prepare"]
    print(f"{int(pct(rows['tokens'], 50)):>7} {pct(rows['new_pretokens'], 50):>8.0f} {ms(base, 50):>8} "
          f"{ms(old, 50):>7}/{ms(old, 99):<7} {ms(chunked, 50):>7}/{ms(chunked, 99):<7} "
          f"{ms(fast, 50):>7}/{ms(fast, 99):<7} {pct(old, 50) / pct(fast, 50):>7.1f}x "
          f"{pct(chunked, 50) / pct(fast, 50):>7.1f}x "
          f"{ms(rows['old_cpu'], 50):>6}/{ms(rows['chunked_cpu'], 50)}/{ms(rows['fast_cpu'], 50)}")


async def run_alone(raw: Tokenizer, size: int, iterations: int, warm: int) -> None:
    """The fast encoder in a process of its own, as a router runs it (no other encoder sharing the CPU
    caches or cores): cold prompts of ``size`` tokens after the same warm-up."""
    alone = Bench({"fast": PromptTokenizer(raw)})
    work = Workload(PromptTokenizer(raw), seed=5000)
    alone.warm(work, warm)
    rows: dict[str, list[float]] = defaultdict(list)
    try:
        for i in range(iterations + 2):
            r = await alone.request(work.cold(size))
            if i >= 2:
                for k, v in r.items():
                    rows[k].append(v)
    finally:
        alone.close()
    print(f"{int(pct(rows['tokens'], 50)):>7} {pct(rows['new_pretokens'], 50):>8.0f} {ms(rows['prepare'], 50):>8} "
          f"{'':>15} {'':>15} {ms(rows['fast'], 50):>7}/{ms(rows['fast'], 99):<7} {'':>8} {'':>8} "
          f"{ms(rows['fast_cpu'], 50):>19}   (fast alone)")


async def run_mix(bench: Bench, work: Workload, requests: int) -> None:
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i in range(requests + 20):
        kind, messages, reply = work.mixed()
        r = await bench.request(messages)
        if reply is not None:  # the chunking routers cache the reply they relay before the client's next turn
            for name in ("chunked", "fast"):
                pending = bench.tokens[name].remember_reply(MODEL, reply)
                if pending is not None:
                    await asyncio.wrap_future(pending)
        if i >= 20:  # the first requests fill the caches, as a running router's are
            for key in (kind, "all"):
                for k, v in r.items():
                    rows[key][k].append(v)
    print(f"{'mix: kind':<17} {'share':>6} {'tokens':>7} {'old p50/p99':>15} {'chunked':>15} {'fast':>15} "
          f"{'old/fast':>8} {'chunked/fast':>12} {'CPU ms old/chunked/fast p50':>27}")
    for kind, r in sorted(rows.items(), key=lambda kv: kv[0] == "all"):
        old, chunked, fast = r["old"], r["chunked"], r["fast"]
        print(f"{kind:<17} {len(old) / requests:>6.0%} {pct(r['tokens'], 50):>7.0f} {ms(old, 50):>7}/{ms(old, 99):<7} "
              f"{ms(chunked, 50):>7}/{ms(chunked, 99):<7} {ms(fast, 50):>7}/{ms(fast, 99):<7} "
              f"{pct(old, 50) / pct(fast, 50):>7.1f}x {pct(chunked, 50) / pct(fast, 50):>11.1f}x "
              f"{ms(r['old_cpu'], 50):>9}/{ms(r['chunked_cpu'], 50)}/{ms(r['fast_cpu'], 50)}")
    print("mix: the chunked and fast routers also cache each relayed reply (in the background, between turns) "
          "that the next turn sends back")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200, help="cold prompts per size")
    ap.add_argument("--mix", type=int, default=600, help="requests of the service mix")
    ap.add_argument("--sizes", default="2000,8000,32000", help="approximate cold prompt sizes in tokens")
    ap.add_argument("--vocab", type=int, default=100_000, help="vocabulary of the trained tokenizer")
    ap.add_argument("--warm-chars", type=int, default=2_000_000, help="other text each encoder sees first")
    ap.add_argument("--alone", action="store_true", help="also time the fast encoder with no other encoder "
                    "in the process (a second, separate run of the cold prompts)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: a small tokenizer, few requests")
    args = ap.parse_args()
    iterations, requests, sizes = args.iterations, args.mix, [int(s) for s in args.sizes.split(",")]
    vocab, chars, warm = args.vocab, max(2_000_000, args.vocab * 80), args.warm_chars
    if args.smoke:
        iterations, requests, sizes, vocab, chars, warm = 5, 40, [2000], 4000, 200_000, 50_000
        args.alone = True
    raw, origin = bench_tokenizer(vocab, chars)
    new = PromptTokenizer(raw)
    if new.fast is None:
        sys.exit("the fast encoder is not available here (C extension not built?)")
    bench = Bench({"old": LegacyPromptTokenizer(raw), "chunked": PromptTokenizer(raw, fast=False), "fast": new})
    work = Workload(new)
    bench.warm(work, warm)
    print(f"tokenizer: DeepSeek-like byte-level BPE, vocabulary {raw.get_vocab_size()} ({origin}); "
          f"{work.chars_per_token:.2f} characters per token of the generated text; chunks of >= "
          f"{new.chunker.min_chars} characters ({new.chunker.family}); {os.cpu_count()} CPUs; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"cold (prompt text never seen; encoders warmed with {warm} characters of other text), {iterations} "
          "prompts per size; ms added by tokenization (render + encode + hashes)")
    print(f"{'tokens':>7} {'new pre-tokens':>8} {'prepare':>8} {'old p50/p99':>15} {'chunked':>15} {'fast':>15} "
          f"{'old/fast':>8} {'chunked/fast':>8} {'CPU ms old/chunked/fast p50'}")
    try:
        for size in sizes:
            asyncio.run(run_cold(bench, work, size, iterations))
        if args.alone:
            for size in sizes:
                asyncio.run(run_alone(raw, size, iterations, warm))
        print("prepare = parse + validate + byte hashes before tokenization; CPU = the process's CPU time per "
              "tokenization at p50 (the library encodes on several threads: its CPU can exceed its wall time)")
        asyncio.run(run_mix(bench, work, requests))
    finally:
        bench.close()
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
