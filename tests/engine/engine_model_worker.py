"""One engine rank for the distributed tests (run as a script; not collected by pytest).

usage: engine_model_worker.py MODEL_DIR LAYOUTS OUT SCENARIO   (rank/world/leader from SUPERNODE_* env)
LAYOUTS: "tp,ep,port;tp,ep,port;..." — one group per layout, built one after another in the same processes.
SCENARIO: generate = prefill two prompts (one chunked) then greedy-decode; save logits and tokens to OUT.N.pt.
          busy = rank 0 steps a decode every 0.1 s forever; idle = rank 0 sleeps forever (peer-loss tests).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

import torch

from supernode.engine.distributed import DistEnv
from supernode.engine.runner import EngineConfig, ModelRunner, SeqInput

PROMPTS = ([5, 17, 99, 3, 250, 41, 7, 8, 9, 10, 11], [300, 2, 64])
TABLES = ([6, 2, 9, 4, 11, 12, 13, 14, 15, 16], [1, 3, 5, 7, 20, 21, 22, 23, 24, 25])
DECODE_STEPS = 8


def generate(runner: ModelRunner) -> dict[str, torch.Tensor]:
    # slots: per-sequence state of stateful models (DeepSeek-V4); ignored by V3. Prompt 0's first chunk asks
    # for every position's logits (prompt log-probabilities): 6 rows, then prompt 1's one.
    every = SeqInput(PROMPTS[0][:6], 0, TABLES[0], 0, all_logits=True)
    first = runner.run([every, SeqInput(list(PROMPTS[1]), 0, TABLES[1], 1)])
    rest = runner.run([SeqInput(PROMPTS[0][6:], 6, TABLES[0], 0)])  # chunked prefill of prompt 0
    logits = [torch.stack([rest[0], first[6]])]
    seqs = [list(PROMPTS[0]), list(PROMPTS[1])]
    for _ in range(DECODE_STEPS):
        for s, row in zip(seqs, logits[-1], strict=True):
            s.append(int(row.argmax()))
        step = [SeqInput([s[-1]], len(s) - 1, t, i) for i, (s, t) in enumerate(zip(seqs, TABLES, strict=True))]
        logits.append(runner.run(step))
    single = [runner.run([SeqInput([3, 1, 4, 1, 5], 0, [30, 31, 28], 2)])]  # one sequence alone: 1-token steps
    for pos in range(5, 5 + DECODE_STEPS):
        single.append(runner.run([SeqInput([int(single[-1][0].argmax())], pos, [30, 31, 28, 29], 2)]))
    return {
        "logits": torch.stack(logits),
        "tokens": torch.tensor([s[-DECODE_STEPS:] for s in seqs]),
        "single": torch.cat(single),
        "prompt": first[:6],
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model_dir, layouts, out, scenario = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    for i, layout in enumerate(layouts.split(";")):
        tp, ep, port = (int(v) for v in layout.split(","))
        run_layout(model_dir, tp, ep, port, f"{out}.{i}.pt", scenario)
    return 0


def run_layout(model_dir: str, tp: int, ep: int, port: int, out: str, scenario: str) -> None:
    cfg = EngineConfig(
        model_dir,
        tensor_parallel=tp,
        expert_parallel=ep,
        num_kv_blocks=32,
        block_size=4,
        cpu_threads=1,
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=2.0,
        dist_timeout_s=60,
    )
    runner = ModelRunner(cfg, dataclasses.replace(DistEnv.from_env(), leader_port=port))
    if not runner.is_leader:
        runner.follower_loop()
        return
    if scenario == "generate":
        torch.save(generate(runner), out)
    elif scenario in ("busy", "idle"):
        print("READY", flush=True)
        while True:
            if scenario == "busy":
                runner.run([SeqInput([5], 0, [0], 0)])
            time.sleep(0.1)
    runner.shutdown()


if __name__ == "__main__":
    sys.exit(main())
