"""Model-runner figures on the `small` checkpoint (no scheduler/HTTP): prefill, batched decode, vs transformers.

usage: python benchmarks/engine_runner.py [--threads N] [--steps N] [--dir DIR] [--smoke]
Prints per-step latencies, decode tokens/s at batch 1/8/32 and the ratio to transformers' `generate`
(one request at a time, same weights, same threads).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

from supernode.engine.checkpoint import init_checkpoint
from supernode.engine.runner import EngineConfig, ModelRunner, SeqInput


def _table(seq: int, blocks: int) -> list[int]:
    return list(range(seq * blocks, (seq + 1) * blocks))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--dir", default="")
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    args = ap.parse_args()
    if args.smoke:
        args.steps = 2
    model_dir = args.dir or tempfile.mkdtemp(prefix="supernode-bench-")
    if not args.dir:
        init_checkpoint(model_dir, "tiny" if args.smoke else "small", seed=0)
    runner = ModelRunner(EngineConfig(model_dir, num_kv_blocks=40 * 80, cpu_threads=args.threads))
    vocab = runner.model_config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (1024,), generator=gen).tolist()
    runner.run([SeqInput(prompt[:64], 0, _table(39, 80))])  # warm-up

    t = time.perf_counter()
    runner.run([SeqInput(prompt, 0, _table(0, 80))])
    cold = time.perf_counter() - t
    t = time.perf_counter()
    runner.run([SeqInput(prompt[-16:], 1008, _table(0, 80))])  # the same prefix already cached: 16 new tokens
    cached = time.perf_counter() - t
    print(f"prefill 1024 tokens: {cold * 1000:.0f} ms; last 16 tokens over a cached 1008-token prefix: "
          f"{cached * 1000:.1f} ms ({cold / cached:.0f}x)")  # fmt: skip

    rates = {}
    for batch in (1, 8, 32):
        seqs = [SeqInput(prompt[:64], 0, _table(1 + j, 80)) for j in range(batch)]
        runner.run(seqs)
        t = time.perf_counter()
        for i in range(args.steps):
            runner.run([SeqInput([5 + j], 64 + i, _table(1 + j, 80)) for j in range(batch)])
        dt = (time.perf_counter() - t) / args.steps
        rates[batch] = batch / dt
        print(f"decode batch {batch:2d}: {dt * 1000:6.1f} ms/step, {rates[batch]:7.0f} tokens/s")

    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt[:64]])
    kw = {"do_sample": False, "min_new_tokens": args.steps, "max_new_tokens": args.steps}
    ref.generate(ids, **{**kw, "min_new_tokens": 2, "max_new_tokens": 2})
    t = time.perf_counter()
    ref.generate(ids, **kw)
    hf = args.steps / (time.perf_counter() - t)
    print(f"transformers generate (one request): {hf:.0f} tokens/s")
    for batch, rate in rates.items():
        print(f"ratio runner batch {batch} / transformers: {rate / hf:.1f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
