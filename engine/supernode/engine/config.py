"""EngineConfig: what one engine process needs to know, parsed and validated before anything is built."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supernode.api.constants import DEFAULT_BLOCK_SIZE

DEVICES = ("cpu", "cuda", "npu")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings. Validates itself on construction (raises ConfigError naming the field)."""

    model_dir: str
    device: str = "cpu"  # cpu | cuda | npu
    dtype: str = "auto"  # auto = the checkpoint's dtype (config.json `torch_dtype`/`dtype`), else float32
    tensor_parallel: int = 1  # attention/dense/shared-expert sharding; 1 or the world size
    expert_parallel: int = 1  # routed experts sharded over ranks; 1 or the world size
    block_size: int = DEFAULT_BLOCK_SIZE  # tokens per KV block (must match the router's hashing)
    num_kv_blocks: int | None = None  # explicit KV cache size; else derived (see kv_cache_memory_fraction)
    kv_cache_memory_fraction: float = 0.9  # accelerators: share of free device memory the KV cache may take
    max_num_seqs: int = 64  # sequences per step
    max_num_batched_tokens: int = 2048  # tokens per step (prefill chunks + decodes)
    max_model_len: int | None = None  # context limit; default: the model's max_position_embeddings
    seed: int = 0  # torch seed (weights are loaded, so this only matters for sampling done on device)
    cpu_threads: int | None = None  # torch intra-op threads; None: all cores, split evenly when ranks share a CPU
    dist_timeout_s: float = 600.0  # torch.distributed collective timeout
    heartbeat_interval_s: float = 0.5  # ranks publish liveness this often
    heartbeat_timeout_s: float = 5.0  # a rank silent this long is dead: the group exits non-zero

    def __post_init__(self) -> None:
        if not self.model_dir:
            raise ConfigError("model_dir: required")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ConfigError(f"model_dir: no config.json in {self.model_dir!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device: must be one of {DEVICES}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("tensor_parallel", "expert_parallel", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        tp, ep = self.tensor_parallel, self.expert_parallel
        world = max(tp, ep)
        if tp not in (1, world) or ep not in (1, world):
            raise ConfigError(
                f"tensor_parallel/expert_parallel: each must be 1 or the world size max(tp, ep); got tp={tp}, ep={ep}"
            )
        if self.num_kv_blocks is not None and self.num_kv_blocks < 2:
            raise ConfigError(f"num_kv_blocks: must be >= 2, got {self.num_kv_blocks}")
        if not 0.0 < self.kv_cache_memory_fraction <= 1.0:
            raise ConfigError(f"kv_cache_memory_fraction: must be in (0, 1], got {self.kv_cache_memory_fraction}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"cpu_threads: must be positive, got {self.cpu_threads}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"max_model_len: must be positive, got {self.max_model_len}")
        for name in ("dist_timeout_s", "heartbeat_interval_s", "heartbeat_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError("heartbeat_timeout_s: must exceed heartbeat_interval_s")

    @property
    def world_size(self) -> int:
        """Ranks in the group: max(tensor_parallel, expert_parallel)."""
        return max(self.tensor_parallel, self.expert_parallel)

    def hf_config(self) -> dict[str, Any]:
        """The checkpoint's config.json as a dict."""
        with open(os.path.join(self.model_dir, "config.json"), encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
