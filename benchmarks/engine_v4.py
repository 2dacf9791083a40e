"""DeepSeek-V4 in the built-in engine: throughput vs transformers, KV bytes per token vs V3, cached-prefix TTFT.

    python benchmarks/engine_v4.py [--preset small-v4] [--max-tokens 64] [--concurrency 1,8,32]
    python benchmarks/engine_v4.py --smoke      # a few seconds: tiny-v4, small numbers (run by the test suite)

1. Output tokens/s of the engine (in-process engine loop, greedy, fixed length) at each concurrency vs
   transformers `generate` one request at a time on the same checkpoint and thread count. Target: >= 8x at 32.
   Both per wall second and per CPU second of the process (all its threads): on a machine shared with other
   work the wall figures swing with the load, the CPU-time ones much less.
2. KV-cache bytes per token of context at 4k / 64k / 256k: the V4 cache as the engine allocates it (paged
   compressed entries + one state slot per sequence) vs the V3 preset of similar size (paged MLA latents),
   and the same for the full-size shapes (transformers' default V4-Flash and V3 configs).
3. Time to first token of a prompt sharing a long prefix with an earlier one (resumed from a prefix
   snapshot) vs the same prompt cold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

V3_OF_SIMILAR_SIZE = {"tiny-v4": "tiny", "small-v4": "small"}


def make_checkpoint(preset: str, root: Path) -> Path:
    from supernode.engine.checkpoint import init_checkpoint

    out = root / preset
    init_checkpoint(str(out), preset)
    return out


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(16, vocab) for _ in range(length)] for _ in range(n)]


@dataclass(frozen=True)
class Rate:
    wall: float  # tokens per wall-clock second
    cpu: float  # tokens per CPU second of this process

    def __str__(self) -> str:
        return f"{self.wall:8.1f} tokens/s ({self.cpu:8.1f} per CPU second)"


class Engine:
    """The engine loop over a ModelRunner, in this process (no HTTP: the model and cache are what is measured)."""

    def __init__(self, model_dir: Path, max_num_seqs: int, threads: int) -> None:
        from supernode.engine.llm_engine import EngineOptions, LLMEngine
        from supernode.engine.metrics import EngineMetrics
        from supernode.engine.runner import EngineConfig, ModelRunner
        from supernode.engine.tokenizer import Tokenizer

        cfg = EngineConfig(str(model_dir), max_num_seqs=max_num_seqs, num_kv_blocks=4096, cpu_threads=threads)
        self.runner = ModelRunner(cfg)
        options = EngineOptions("bench", max_num_seqs=max_num_seqs, max_model_len=8192)
        self.engine = LLMEngine(self.runner, Tokenizer.from_dir(model_dir), options, EngineMetrics("bench"))
        self.engine.start()

    async def generate(self, batch: list[list[int]], max_tokens: int) -> tuple[int, list[float]]:
        """Output tokens and per-request time to first token."""
        from supernode.engine.core.sequence import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

        async def one(p: list[int]) -> tuple[int, float]:
            started, first, n = time.perf_counter(), 0.0, 0
            async for out in self.engine.submit(p, params):
                if out.error:
                    raise RuntimeError(out.error)
                if out.token_ids and not n:
                    first = time.perf_counter() - started
                n += len(out.token_ids)
            return n, first

        done = await asyncio.gather(*(one(p) for p in batch))
        return sum(n for n, _ in done), [t for _, t in done]

    def tps(self, batch: list[list[int]], max_tokens: int) -> Rate:
        started, cpu = time.perf_counter(), time.process_time()
        tokens, _ = asyncio.run(self.generate(batch, max_tokens))
        return Rate(tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu))

    def ttft(self, prompt: list[int]) -> float:
        return asyncio.run(self.generate([prompt], 1))[1][0]

    def stop(self) -> None:
        self.engine.stop()


def hf_tps(model_dir: Path, batch: list[list[int]], max_tokens: int, threads: int) -> Rate:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # fixed length, like ignore_eos on the engine side
    with torch.inference_mode():
        model.generate(torch.tensor([batch[0][:8]]), max_new_tokens=2, do_sample=False)  # warm-up
        started, cpu, tokens = time.perf_counter(), time.process_time(), 0
        for p in batch:
            out = model.generate(torch.tensor([p]), max_new_tokens=max_tokens, do_sample=False)
            tokens += out.shape[1] - len(p)
    return Rate(tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu))


def kv_bytes_per_token(v4: dict[str, Any], v3: dict[str, Any], block_size: int, contexts: list[int]) -> list[str]:
    """Bytes of KV cache per context token for one sequence (bf16), V4 layout vs V3 MLA, and the ratio."""
    from supernode.engine.model.config import DeepseekV3Config
    from supernode.engine.model.v4_cache import compressed_bytes_per_block, state_bytes_per_slot
    from supernode.engine.model.v4_config import DeepseekV4Config

    c4, c3 = DeepseekV4Config.from_hf(v4), DeepseekV3Config.from_hf(v3)
    elem = 2
    v3_per_token = c3.num_hidden_layers * (c3.kv_lora_rank + c3.qk_rope_head_dim) * elem
    lines = []
    for n in contexts:
        blocks = -(-n // block_size)
        v4_total = blocks * compressed_bytes_per_block(c4, block_size, elem) + state_bytes_per_slot(c4, elem)
        v3_total = blocks * block_size * v3_per_token
        lines.append(
            f"  {n // 1024:>4}k tokens: V4 {v4_total / n:9.1f} B/token ({v4_total / 2**30:7.3f} GiB)  "
            f"V3 {v3_total / n:9.1f} B/token ({v3_total / 2**30:7.3f} GiB)  V3/V4 = {v3_total / v4_total:5.1f}x"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="small-v4", choices=sorted(V3_OF_SIMILAR_SIZE))
    ap.add_argument("--model-dir", default=None, help="a V4 checkpoint (default: a fresh --preset one)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--hf-requests", type=int, default=2)
    ap.add_argument("--prefix-len", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides (default 1)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: tiny-v4 and small numbers")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.max_tokens, args.concurrency, args.hf_requests, args.prefix_len = "tiny-v4", 8, "1,4", 1, 96

    from supernode.engine.checkpoint import PRESETS
    from supernode.engine.presets_v4 import V4_COMMON, V4_PRESETS

    root = Path(tempfile.mkdtemp(prefix="supernode-bench-v4-"))
    model_dir = Path(args.model_dir) if args.model_dir else make_checkpoint(args.preset, root)
    config = json.loads((model_dir / "config.json").read_text())
    vocab = config["vocab_size"]
    levels = [int(c) for c in args.concurrency.split(",")]

    print("== KV cache bytes per token of context (bf16, block 16)")
    print(f"{args.preset} vs {V3_OF_SIMILAR_SIZE[args.preset]} (V3 preset of similar size):")
    v3_preset = {"model_type": "deepseek_v3", **PRESETS[V3_OF_SIMILAR_SIZE[args.preset]]}
    for line in kv_bytes_per_token({**V4_COMMON, **V4_PRESETS[args.preset]}, v3_preset, 16, [4096, 65536, 262144]):
        print(line)
    print("full size: transformers' default V4 (Flash shape) vs default V3:")
    for line in kv_bytes_per_token({"model_type": "deepseek_v4"}, {"model_type": "deepseek_v3"}, 16,
                                   [4096, 65536, 262144, 1048576]):  # fmt: skip
        print(line)

    engine = Engine(model_dir, max(levels), args.threads)
    try:
        print("== output tokens/s (greedy, fixed length)")
        engine.tps(prompts(2, 8, vocab, 0), 2)  # warm-up
        hf_runs, results = [], {}
        for i, c in enumerate(levels):
            hf_runs.append(hf_tps(model_dir, prompts(args.hf_requests, args.prompt_len, vocab, 100 + i),
                                  args.max_tokens, args.threads))  # fmt: skip
            print(f"transformers generate, one at a time: {hf_runs[-1]}")
            results[c] = engine.tps(prompts(c, args.prompt_len, vocab, i + 1), args.max_tokens)
            print(f"engine concurrency {c:>3}:                {results[c]}")
        wall, cpu = statistics.mean(r.wall for r in hf_runs), statistics.mean(r.cpu for r in hf_runs)
        for c, r in results.items():
            ratios = f"{r.wall / wall:6.2f}x per wall second, {r.cpu / cpu:6.2f}x per CPU second"
            print(f"ratio engine@{c} / transformers: {ratios}")

        print(f"== TTFT, {args.prefix_len}-token shared prefix")
        cold, warm = [], []
        for r in range(2 if args.smoke else 3):
            prefix = prompts(1, args.prefix_len, vocab, 1000 + r)[0]
            cold.append(engine.ttft(prefix + prompts(1, 16, vocab, 2000 + r)[0]))  # snapshots the prefix
            warm.append(engine.ttft(prefix + prompts(1, 16, vocab, 3000 + r)[0]))
        hits = engine.engine.blocks.stats.hits
        t_cold, t_warm = statistics.median(cold), statistics.median(warm)
        print(f"cold {t_cold * 1000:8.1f} ms   cached prefix {t_warm * 1000:8.1f} ms   speed-up {t_cold / t_warm:5.2f}x"
              f"   ({hits} prompt tokens from cache)")  # fmt: skip
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
