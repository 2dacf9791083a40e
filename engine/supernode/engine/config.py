"""EngineConfig: what one engine process needs to know, parsed and validated before anything is built.

This is the one source of the engine's settings: the `supernode engine serve` flags are generated
from its fields (name, default, help, environment variable), `ServeOptions` carries one, and the
engine loop's and the scheduler's limits are derived from it (`EngineOptions.from_config`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supernode.api import constants as C

DEVICES = ("cpu", "cuda", "npu")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _opt(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = int,
    *,
    env: str | None = None,
    choices: tuple[str, ...] | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A field that is also a `supernode engine serve` flag (``--field-name``)."""
    meta = {"help": help, "parse": parse, "env": env, "choices": choices, "aliases": aliases}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings. Validates itself on construction (raises ConfigError naming the field)."""

    model_dir: str
    device: str = _opt("cpu", "cpu | cuda | npu", str, env=C.ENV_DEVICE, choices=DEVICES)
    dtype: str = _opt("auto", "weights dtype; auto = the checkpoint's (else float32)", str, choices=DTYPES)
    tensor_parallel: int = _opt(
        1, "attention/dense/shared-expert sharding; 1 or the world size", env=C.ENV_TENSOR_PARALLEL,
        aliases=("--tensor-parallel-size",),
    )  # fmt: skip
    expert_parallel: int = _opt(1, "routed experts sharded over ranks; 1 or the world size", env=C.ENV_EXPERT_PARALLEL)
    block_size: int = _opt(
        C.DEFAULT_BLOCK_SIZE, "tokens per KV block (sent in KV events; the router hashes prompts with it)"
    )
    num_kv_blocks: int | None = _opt(None, "KV cache size in blocks (default: derived from memory and max_num_seqs)")
    kv_cache_memory_fraction: float = _opt(0.9, "accelerators: share of free device memory for the KV cache", float)
    max_num_seqs: int = _opt(64, "sequences per step")
    max_num_batched_tokens: int = _opt(2048, "tokens per step (prefill chunks + decodes)")
    max_model_len: int | None = _opt(None, "context limit (default: the model's max_position_embeddings)")
    max_waiting: int = _opt(256, "requests queued beyond the running batch; more get 429")
    seed: int = _opt(0, "sampling seed for requests without one")
    cpu_threads: int | None = _opt(None, "torch intra-op threads per rank (default: cores / local ranks)")
    dist_timeout_s: float = _opt(600.0, "torch.distributed collective timeout (seconds)", float)
    heartbeat_interval_s: float = _opt(0.5, "ranks publish liveness this often (seconds)", float)
    heartbeat_timeout_s: float = _opt(5.0, "a rank silent this long is dead: the group exits (seconds)", float)
    kv_events_log: int = _opt(10_000, "KV events kept so a /v1/kv_events subscriber can resume without a snapshot")
    kv_events_endpoint: str | None = _opt(
        None, "publish KV events in vLLM's format on this ZMQ PUB address (e.g. tcp://*:5557; default: off)", str,
    )  # fmt: skip
    kv_events_replay_endpoint: str | None = _opt(
        None, "ZMQ ROUTER address answering vLLM-style replay requests (e.g. tcp://*:5558)", str,
    )  # fmt: skip
    kv_events_topic: str = _opt("kv-events", "topic frame of the published KV event batches", str)
    kv_events_buffer_steps: int = _opt(10_000, "published KV event batches kept for replay")

    def __post_init__(self) -> None:
        if not self.model_dir:
            raise ConfigError("model_dir: required")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ConfigError(f"model_dir: no config.json in {self.model_dir!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device: must be one of {DEVICES}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: must be one of {DTYPES}, got {self.dtype!r}")
        names = ("tensor_parallel", "expert_parallel", "block_size", "max_num_seqs", "max_num_batched_tokens")
        for name in names:
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
        if self.max_waiting < 0:
            raise ConfigError(f"max_waiting: must be >= 0, got {self.max_waiting}")
        for name in ("dist_timeout_s", "heartbeat_interval_s", "heartbeat_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError("heartbeat_timeout_s: must exceed heartbeat_interval_s")
        for name in ("kv_events_log", "kv_events_buffer_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be positive")
        for name in ("kv_events_endpoint", "kv_events_replay_endpoint"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("tcp://", "ipc://", "inproc://")):
                raise ConfigError(f"{name}: a ZMQ address (tcp://, ipc:// or inproc://), got {value!r}")
        if self.kv_events_replay_endpoint and not self.kv_events_endpoint:
            raise ConfigError("kv_events_replay_endpoint: needs kv_events_endpoint")

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

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> EngineConfig:
        """Built from a mapping holding (at least) every field, e.g. parsed CLI flags; ``None`` = the default."""
        given = {f.name: values[f.name] for f in dataclasses.fields(cls) if values.get(f.name) is not None}
        return cls(**given)

    def as_flags(self) -> list[str]:
        """The `supernode engine serve` flags that reproduce this config (what local follower ranks get)."""
        out = ["--model-dir", self.model_dir]
        for f in flag_fields():
            value = getattr(self, f.name)
            if value is not None:
                out += [flag_name(f), str(value)]
        return out


def flag_fields() -> list[dataclasses.Field[Any]]:
    """EngineConfig fields exposed as flags (all but ``model_dir``, which has its own spellings)."""
    return [f for f in dataclasses.fields(EngineConfig) if "help" in f.metadata]


def flag_name(f: dataclasses.Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def default(name: str) -> Any:
    """An EngineConfig field's default (so that other option types never restate it)."""
    return EngineConfig.__dataclass_fields__[name].default
