"""Router benchmark: what encoding prompts with the engine's tokenizer adds to the router's request path.

For chat prompts of about 2k tokens and larger, side by side in one process:
- baseline: the router's request preparation without tokenization (`pipeline.prepare`: strict JSON parse,
  validation, model and mode, pools, approximate prefix hashes);
- cold: preparation + `PromptTokens.apply` (render the shared DeepSeek template, encode, hash the token
  blocks) with nothing cached (every prompt's system text is new);
- cached: the same for a conversation that goes on (system prompt and earlier turns seen before, only
  the newest user turn encoded).
Reports p50/p99 of the added time and the ratio (prepare + tokenize) / prepare. The tokenizer is a byte-level
BPE trained locally on the built-in corpus (no network); a 128k-vocabulary tokenizer costs somewhat more
per character.

    python benchmarks/router_tokenize.py [--iterations 300] [--sizes 2000,8000,32000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import MODEL, pct

from supernode.api.chattemplate import TEMPLATE_ID
from supernode.api.constants import DEFAULT_BLOCK_SIZE
from supernode.api.endpoints import Endpoint
from supernode.api.prompttokens import PromptTokenizer, tokenizer_digest
from supernode.engine.checkpoint import train_tokenizer
from supernode.engine.corpus import corpus
from supernode.router.apis.openai import parse_chat
from supernode.router.config import RouterConfig
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import Prepared, prepare
from supernode.router.routing.state import EndpointTable
from supernode.router.tokens.metrics import TokenMetrics
from supernode.router.tokens.model import ModelTokenizer
from supernode.router.tokens.service import PromptTokens

TEXT = " ".join(corpus(repeat=1))


def conversation(tokens: int, tok: PromptTokenizer, system_tag: str, turn: int) -> list[dict[str, str]]:
    """~60% system prompt, then earlier turns, then one new user turn; about ``tokens`` tokens in all."""
    per_char = len(tok.encode_text(TEXT)) / len(TEXT)
    chars = int(tokens / per_char)
    text = (TEXT * (chars // len(TEXT) + 1))
    system, history = text[: int(chars * 0.6)], text[int(chars * 0.6) : chars]
    turns = [history[i : i + 800] for i in range(0, len(history), 800)]
    msgs = [{"role": "system", "content": f"{system_tag} {system}"}]
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    msgs.append({"role": "user", "content": f"Question {turn}: what did the system prompt say about caching?"})
    return msgs


async def measure(size: int, iterations: int, tok: PromptTokenizer, config: RouterConfig,
                  table: EndpointTable, warmup: int = 10) -> dict[str, list[float]]:
    max_blocks = config.routing.prefix.max_blocks_per_request
    tokens = PromptTokens(TokenMetrics(RouterMetrics().registry), max_blocks=max_blocks)
    digest = tokenizer_digest(json.dumps(tok.spec))
    tokens.set(MODEL, ModelTokenizer(tok, MODEL, DEFAULT_BLOCK_SIZE, TEMPLATE_ID, digest, "file"))
    out: dict[str, list[float]] = {"baseline": [], "cold": [], "cached": [], "cold_cpu": [], "cached_cpu": []}
    counts: list[int] = []
    for i in range(iterations + warmup):
        for kind in ("cold", "cached"):
            tag = f"[{i}]" if kind == "cold" else "[shared]"  # cold: a new system prompt every time
            raw = json.dumps({"model": MODEL, "messages": conversation(size, tok, tag, i), "max_tokens": 16}).encode()
            t0 = time.perf_counter()
            prep: Prepared = prepare(raw, parse_chat, anthropic=False, config=config, table=table,
                                     session_header=None)
            t1, c1 = time.perf_counter(), time.process_time()
            done = await tokens.apply(prep)
            t2, c2 = time.perf_counter(), time.process_time()
            if i >= warmup:
                out["baseline"].append(t1 - t0)
                out[kind].append(t2 - t1)
                out[f"{kind}_cpu"].append(c2 - c1)
                counts.append(len(done.prompt_token_ids or ()))
    out["tokens"] = [float(sum(counts) / len(counts))]
    tokens.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--sizes", default="2000,8000,32000", help="approximate prompt sizes in tokens")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 2k and 8k tokens, 10 iterations")
    args = ap.parse_args()
    iterations, sizes = args.iterations, [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        iterations, sizes = 10, [2000, 8000]
    tok = PromptTokenizer(train_tokenizer(8192))
    config = RouterConfig.model_validate({"discovery": {"type": "static", "path": "unused.json"}, "admission": None})
    table = EndpointTable()
    table.update([Endpoint(url="http://127.0.0.1:9", model=MODEL)])
    print(f"vocabulary {len(tok.spec['model']['vocab'])} tokens (trained locally); {iterations} iterations per size")
    print(f"{'prompt':>14} {'prepare p50/p99 ms':>20} {'+tokenize cold p50/p99 ms':>27} "
          f"{'+tokenize cached p50/p99 ms':>29} {'ratio cold':>11} {'ratio cached':>13} {'CPU ms cold/cached':>19}")
    for size in sizes:
        r = asyncio.run(measure(size, iterations, tok, config, table, warmup=2 if args.smoke else 10))
        base, cold, cached = r["baseline"], r["cold"], r["cached"]
        b50 = pct(base, 50)
        print(f"{int(r['tokens'][0]):>8} tokens {b50 * 1e3:>9.3f}/{pct(base, 99) * 1e3:<9.3f} "
              f"{pct(cold, 50) * 1e3:>13.3f}/{pct(cold, 99) * 1e3:<13.3f} "
              f"{pct(cached, 50) * 1e3:>14.3f}/{pct(cached, 99) * 1e3:<14.3f} "
              f"{(b50 + pct(cold, 50)) / b50:>10.2f}x {(b50 + pct(cached, 50)) / b50:>12.2f}x "
              f"{pct(r['cold_cpu'], 50) * 1e3:>9.3f}/{pct(r['cached_cpu'], 50) * 1e3:<9.3f}")
    print("ratio = (prepare + tokenize) / prepare at p50; tokenize = render + encode + block hashes; CPU = the "
          "process's CPU time per tokenize at p50 (moves less with the machine's load than wall time)")


if __name__ == "__main__":
    main()
