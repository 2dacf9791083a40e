"""Output tokens/s of the built-in engine (HTTP, concurrency 1/8/32) vs transformers `generate` one at a time.

    python benchmarks/engine_throughput.py [--model-dir DIR] [--max-tokens 128] [--prompt-len 32]

Greedy decoding, fixed output length (ignore_eos / min_new_tokens), random prompt token ids.
Targets: >= 8x transformers at concurrency 32; single stream no slower than transformers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

import httpx
from engine_bench_common import EngineProcess, checkpoint, self_peak_rss_mib


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(16, vocab) for _ in range(length)] for _ in range(n)]


async def engine_tps(url: str, batch: list[list[int]], max_tokens: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(p: list[int]) -> int:
            body = {"model": "bench", "prompt": p, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
            r = await client.post("/v1/completions", json=body)
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(p) for p in batch)))
        return tokens / (time.perf_counter() - started)


class HFBaseline:
    """transformers `generate`, one request at a time, on the same checkpoint and thread count."""

    def __init__(self, model_dir: Path, max_tokens: int, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.kwargs = {"max_new_tokens": max_tokens, "min_new_tokens": max_tokens, "do_sample": False}

    def tps(self, batch: list[list[int]]) -> float:
        with self.torch.inference_mode():
            self.model.generate(self.torch.tensor([batch[0][:8]]), max_new_tokens=2)  # warm-up
            started, tokens = time.perf_counter(), 0
            for p in batch:
                out = self.model.generate(self.torch.tensor([p]), **self.kwargs)
                tokens += out.shape[1] - len(p)
        return tokens / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=None, help="checkpoint (default: a fresh `small` one)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--hf-requests", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides (default 1)")
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    args = ap.parse_args()
    if args.smoke:
        args.max_tokens, args.prompt_len, args.concurrency, args.hf_requests = 4, 8, "2", 1
    model_dir = checkpoint(args.model_dir, "tiny" if args.smoke else "small")
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    levels = [int(c) for c in args.concurrency.split(",")]
    threads = ["--cpu-threads", str(args.threads)]
    engine = EngineProcess(model_dir, "--max-num-seqs", str(max(levels)), "--num-kv-blocks", "2048", *threads)
    hf = HFBaseline(model_dir, args.max_tokens, args.threads)
    results: dict[int, float] = {}
    hf_runs: list[float] = []
    # The two sides alternate (the engine idles while transformers runs) so both see the same machine load.
    try:
        asyncio.run(engine_tps(engine.url, prompts(2, args.prompt_len, vocab, 0), 4))  # warm-up
        for i, c in enumerate(levels):
            hf_runs.append(hf.tps(prompts(args.hf_requests, args.prompt_len, vocab, 100 + i)))
            print(f"transformers generate, one at a time: {hf_runs[-1]:8.1f} output tokens/s")
            results[c] = asyncio.run(engine_tps(engine.url, prompts(c, args.prompt_len, vocab, i + 1), args.max_tokens))
            print(f"engine  concurrency {c:>3}: {results[c]:8.1f} output tokens/s")
        hf_runs.append(hf.tps(prompts(args.hf_requests, args.prompt_len, vocab, 99)))
        print(f"transformers generate, one at a time: {hf_runs[-1]:8.1f} output tokens/s")
        engine_rss = engine.peak_rss_mib()
    finally:
        engine.stop()
    base = statistics.mean(hf_runs)
    print(f"transformers baseline: mean {base:.1f} tokens/s (min {min(hf_runs):.1f}, max {max(hf_runs):.1f})")
    for c, tps in results.items():
        print(f"ratio engine@{c} / transformers: {tps / base:6.2f}x")
    hf_rss = self_peak_rss_mib()
    print(f"peak RSS: engine server {engine_rss:.0f} MiB; benchmark process with transformers {hf_rss:.0f} MiB")


if __name__ == "__main__":
    main()
