"""ModelRunner: one per rank. Owns the device, the model shard, the paged KV cache and the group.

The leader (rank 0) calls `run(batch)` each step; it broadcasts the batch so followers (in
`follower_loop`) execute the same forward, then returns logits for each sequence's last new token.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from supernode.engine.config import ConfigError, EngineConfig
from supernode.engine.distributed import (
    DistEnv,
    GroupStore,
    Heartbeat,
    exit_on_peer_loss,
    init_group,
    resolve_device,
)
from supernode.engine.engine_types import SeqInput
from supernode.engine.model import build_model, parse_model_config
from supernode.engine.model.paged import build_metadata
from supernode.engine.model.v4_cache import StepSeq
from supernode.engine.parallel import ParallelContext
from supernode.engine.weights import load_weights, refuse_quantized, torch_dtype

__all__ = ["EngineConfig", "ModelRunner", "SeqInput"]

log = logging.getLogger(__name__)

# One sequence's work as broadcast to every rank: tokens, start, block table, state slot, restore, saves,
# and whether logits are wanted for every token (prompt log-probabilities) or only the last.
Work = tuple[list[int], int, list[int], int, int, tuple[tuple[int, int], ...], bool]


class ModelRunner:
    def __init__(
        self,
        config: EngineConfig,
        dist_env: DistEnv | None = None,
        on_peer_failure: Callable[[str], None] = exit_on_peer_loss,
    ) -> None:
        self.config = config
        self.env = dist_env or DistEnv()
        if self.env.world_size != config.world_size:
            raise ConfigError(
                f"world size {self.env.world_size} (ranks started) != max(tensor_parallel, expert_parallel)"
                f" = {config.world_size}"
            )
        raw = config.hf_config()
        refuse_quantized(raw)
        self.model_config: Any = parse_model_config(raw)
        self.device = resolve_device(config.device, self.env.local_rank)
        self.dtype = torch_dtype(config.dtype if config.dtype != "auto" else self.model_config.torch_dtype)
        self.block_size = config.block_size
        self.max_model_len = min(
            config.max_model_len or self.model_config.max_position_embeddings, self.model_config.max_position_embeddings
        )
        torch.manual_seed(config.seed)
        if config.device == "cpu":
            # Several ranks on one CPU each spinning all-core OpenMP pools slows every op ~10x; split the cores.
            cores = os.cpu_count() or 1
            torch.set_num_threads(config.cpu_threads or max(1, cores // self.env.world_size))
        self._heartbeat: Heartbeat | None = None
        self._store: GroupStore | None = None
        group = None
        if self.env.world_size > 1:
            self._store = init_group(self.env, config.device, config.dist_timeout_s)
            group = dist.group.WORLD
            self._heartbeat = Heartbeat(
                self.env, config.heartbeat_interval_s, config.heartbeat_timeout_s, on_peer_failure,
                endpoint=(self._store.host, self._store.port),
            )
            self._heartbeat.start()
        self.pctx = ParallelContext(
            self.env.rank, self.env.world_size, config.tensor_parallel, config.expert_parallel, group
        )
        try:
            self._load(raw)
        except BaseException:
            self._leave_group()  # a rank that cannot load leaves now; the others fail fast instead of waiting
            raise
        self._closed = False
        log.info(
            "rank %d ready: %s %s on %s, %d KV blocks of %d tokens",
            self.env.rank,
            self.model_config.model_type,
            self.dtype,
            self.device,
            self.num_kv_blocks,
            self.block_size,
        )

    def _load(self, raw: dict[str, Any]) -> None:
        """Build this rank's shard of the model, load its weights, allocate the KV cache."""
        config = self.config
        with torch.device(self.device):
            previous = torch.get_default_dtype()
            torch.set_default_dtype(self.dtype)
            try:
                self.model = build_model(self.model_config, self.pctx)
            finally:
                torch.set_default_dtype(previous)
        self.model.eval()
        load_weights(self.model, config.model_dir, raw)
        self.stateful = bool(getattr(self.model, "stateful", False))
        # Stateful models: one state slot per running sequence, twice as many for prefix snapshots.
        self.state_slots = (config.max_num_seqs, 2 * config.max_num_seqs) if self.stateful else (0, 0)
        self.num_kv_blocks = self._agree(self._kv_blocks_fitting())
        if self.stateful:
            self.prefix_boundary: int = self.model.prefix_boundary(self.block_size)  # type: ignore[operator]
            self.snapshot_interval: int = self.model.snapshot_interval(self.block_size)  # type: ignore[operator]
            self.kv_caches = self.model.allocate_kv(  # type: ignore[operator]
                self.num_kv_blocks, self.block_size, sum(self.state_slots), self.dtype, self.device
            )
            return
        shape = (self.num_kv_blocks, self.block_size, self.model.kv_cache_dim())  # type: ignore[operator]
        # Uninitialised on purpose: a slot is always written before any query reads it (padding reads
        # repeat a written slot), and on CPU untouched pages are never committed, so a roomy cache is cheap.
        self.kv_caches = [
            torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.model_config.num_hidden_layers)
        ]

    @property
    def is_leader(self) -> bool:
        return self.env.rank == 0

    def _kv_bytes_per_block(self) -> int:
        elem = torch.empty((), dtype=self.dtype).element_size()
        if self.stateful:
            return max(1, self.model.kv_bytes_per_block(self.block_size, elem))  # type: ignore[operator]
        return self.model_config.num_hidden_layers * self.block_size * self.model.kv_cache_dim() * elem  # type: ignore[operator,no-any-return]

    def _kv_blocks_fitting(self) -> int:
        """Explicit num_kv_blocks, else enough for max_num_seqs full contexts, capped by free (device) memory."""
        if self.config.num_kv_blocks is not None:
            return self.config.num_kv_blocks
        wanted = self.config.max_num_seqs * math.ceil(self.max_model_len / self.block_size) + 1
        free = _cpu_available_bytes()
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
        elif self.device.type == "npu":
            free = torch.npu.mem_get_info(self.device)[0]  # type: ignore[attr-defined]
        if free is not None:
            budget = int(free * self.config.kv_cache_memory_fraction)
            if self.stateful:  # the state slots (sliding rings, compressor carry) come out of the same budget
                elem = torch.empty((), dtype=self.dtype).element_size()
                budget -= sum(self.state_slots) * self.model.state_bytes_per_slot(elem)  # type: ignore[operator]
            wanted = min(wanted, max(0, budget) // self._kv_bytes_per_block())
        if wanted < 2:
            raise ConfigError("num_kv_blocks: not enough device memory for a KV cache")
        return wanted

    def _agree(self, blocks: int) -> int:
        """Every rank must use the same block count: take the minimum."""
        if self.env.world_size == 1:
            return blocks
        t = torch.tensor([blocks], dtype=torch.long, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def _comm_device(self) -> torch.device:
        return torch.device("cpu") if self.config.device == "cpu" else self.device

    def _broadcast(self, payload: Any) -> Any:
        box = [payload]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def run(self, batch: Sequence[SeqInput]) -> torch.Tensor:
        """Leader only: compute one step; float32 logits for each sequence's last new token, or for every new
        token of a sequence with ``all_logits`` (rows in batch order)."""
        if not self.is_leader:
            raise RuntimeError("run() is for rank 0; followers call follower_loop()")
        if self._closed:
            raise RuntimeError("runner is shut down")
        if not batch:
            raise ValueError("empty batch")
        for i, s in enumerate(batch):
            if not s.token_ids:
                raise ValueError(f"batch[{i}]: no tokens to compute")
            if s.start_pos + len(s.token_ids) > self.max_model_len:
                raise ValueError(f"batch[{i}]: {s.start_pos + len(s.token_ids)} tokens exceed max_model_len")
            if s.start_pos < 0 or any(not 0 <= b < self.num_kv_blocks for b in s.block_table):
                raise ValueError(f"batch[{i}]: negative start_pos or block id outside [0, {self.num_kv_blocks})")
            if self.stateful and not 0 <= s.slot < self.state_slots[0]:
                raise ValueError(f"batch[{i}]: state slot {s.slot} outside [0, {self.state_slots[0]})")
        work = [
            (list(s.token_ids), s.start_pos, list(s.block_table), s.slot, s.restore, tuple(s.saves), s.all_logits)
            for s in batch
        ]
        if self.env.world_size > 1:
            self._broadcast(work)
        return self._execute(work)

    @torch.inference_mode()
    def _execute(self, work: list[Work]) -> torch.Tensor:
        if self.device.type != "cpu":
            return self._compute(work)
        # Denormal floats (V4's softmaxes produce some) are very slow on x86 CPUs: flush them to zero while
        # the model runs, in this thread only, and put the default back (other code in the process relies on it).
        torch.set_flush_denormal(True)
        try:
            return self._compute(work)
        finally:
            torch.set_flush_denormal(False)

    def _compute(self, work: list[Work]) -> torch.Tensor:
        lengths = [len(w[0]) for w in work]
        tokens = torch.tensor([tok for w in work for tok in w[0]], dtype=torch.long).to(self.device)
        if self.stateful:
            hidden = self._execute_stateful(work, tokens)
        else:
            meta, positions = build_metadata(
                lengths, [w[1] for w in work], [w[2] for w in work], self.block_size, self.device
            )
            hidden = self.model(tokens, positions, meta, self.kv_caches)
        rows = logit_rows(lengths, [w[6] for w in work], self.device)
        return self.model.compute_logits(hidden[rows])  # type: ignore[operator,no-any-return]

    def _execute_stateful(self, work: list[Work], tokens: torch.Tensor) -> torch.Tensor:
        seqs, lo = [], 0
        for token_ids, start, table, slot, restore, saves, _every in work:
            if restore >= 0:
                for cache in self.kv_caches:
                    cache.copy_state(restore, slot)
            blocks = torch.tensor(table, dtype=torch.long, device=self.device)
            seqs.append(StepSeq(lo, len(token_ids), start, blocks, slot, saves))
            lo += len(token_ids)
        return self.model.forward_step(tokens, seqs, self.kv_caches)  # type: ignore[operator,no-any-return]

    def follower_loop(self) -> None:
        """Ranks > 0: execute the leader's batches until it shuts the group down."""
        if self.is_leader:
            raise RuntimeError("follower_loop() is for ranks > 0")
        while True:
            work = self._broadcast(None)
            if work is None:
                break
            self._execute(work)
        self._close()

    def shutdown(self) -> None:
        """Leader: release the followers and leave the group. Idempotent."""
        if self._closed:
            return
        if self.is_leader and self.env.world_size > 1:
            self._broadcast(None)
        self._close()

    def _close(self) -> None:
        self._closed = True
        if self.env.world_size > 1:
            if self._heartbeat and not self.is_leader:
                self._heartbeat.stop()  # followers stop first so the leader's store going away is not a failure
            dist.barrier()
            self._leave_group()

    def _leave_group(self) -> None:
        if self._heartbeat:
            self._heartbeat.stop()
        if self.env.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
        if self._store is not None:
            self._store.close()
            self._store = None


def logit_rows(lengths: Sequence[int], all_logits: Sequence[bool], device: torch.device) -> torch.Tensor:
    """Rows of the flat hidden states whose logits a step returns: each item's last, or all of an item's."""
    rows: list[int] = []
    end = 0
    for n, every in zip(lengths, all_logits, strict=True):
        rows += range(end, end + n) if every else [end + n - 1]
        end += n
    return torch.tensor(rows, dtype=torch.long).to(device)


def _cpu_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (no cap)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
