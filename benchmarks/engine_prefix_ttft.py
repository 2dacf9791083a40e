"""TTFT for a prompt sharing a 1,024-token prefix with an earlier one: cold vs prefix-cached.

    python benchmarks/engine_prefix_ttft.py [--model-dir DIR] [--prefix-len 1024] [--rounds 3]

Each round uses a fresh random prefix: request A (prefix + suffix A) is cold, request B
(same prefix + suffix B) should hit the prefix cache. Target: cached TTFT >= 5x faster.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import httpx
from engine_bench_common import EngineProcess, checkpoint


def ttft(client: httpx.Client, prompt: list[int]) -> tuple[float, int]:
    body = {"model": "bench", "prompt": prompt, "max_tokens": 2, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}  # fmt: skip
    started, first, cached = time.perf_counter(), None, -1
    with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if first is None and data["choices"]:
                first = time.perf_counter() - started
            if data.get("usage"):
                cached = data["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first is not None
    return first, cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=None, help="checkpoint (default: a fresh `small` one)")
    ap.add_argument("--prefix-len", type=int, default=1024)
    ap.add_argument("--suffix-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    args = ap.parse_args()
    if args.smoke:
        args.prefix_len, args.rounds = 128, 1
    model_dir = checkpoint(args.model_dir, "tiny" if args.smoke else "small")
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    rng = random.Random(0)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(16, vocab) for _ in range(n)]

    engine = EngineProcess(
        model_dir, "--num-kv-blocks", "1024", "--max-num-batched-tokens", "4096", "--cpu-threads", "1"
    )
    cold, warm = [], []
    try:
        with httpx.Client(base_url=engine.url, timeout=600) as client:
            ttft(client, tokens(64))  # warm-up
            for i in range(args.rounds):
                prefix = tokens(args.prefix_len)
                a, cached_a = ttft(client, prefix + tokens(args.suffix_len))
                b, cached_b = ttft(client, prefix + tokens(args.suffix_len))
                cold.append(a)
                warm.append(b)
                print(f"round {i}: cold {a * 1000:7.1f} ms (cached {cached_a} tokens),", end=" ")
                print(f"cached {b * 1000:7.1f} ms (cached {cached_b} tokens)")
        rss = engine.peak_rss_mib()
    finally:
        engine.stop()
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"median TTFT cold {c * 1000:.1f} ms, cached {w * 1000:.1f} ms: {c / w:.1f}x faster with the prefix cache")
    print(f"peak RSS: engine server {rss:.0f} MiB")


if __name__ == "__main__":
    main()
