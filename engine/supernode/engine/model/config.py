"""Typed view of a DeepSeek-V3-family `config.json` (no transformers needed at runtime)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supernode.engine.config import ConfigError


@dataclass(frozen=True, slots=True)
class RopeConfig:
    """RoPE settings in transformers v5 `rope_parameters` form (legacy `rope_scaling` is folded in)."""

    rope_type: str = "default"  # default | yarn
    theta: float = 10000.0
    factor: float = 1.0
    original_max_position_embeddings: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> RopeConfig:
        params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in ("default", "yarn"):
            raise ConfigError(f"rope_parameters.rope_type: not implemented: {rope_type!r} (default and yarn are)")
        max_pos = int(raw.get("max_position_embeddings", 4096))
        original = int(params.get("original_max_position_embeddings") or max_pos)
        return cls(
            rope_type=rope_type,
            theta=float(params.get("rope_theta", raw.get("rope_theta", 10000.0))),
            # transformers: a YaRN config without `factor` scales by max_position / original_max_position
            factor=float(params.get("factor") or max_pos / original),
            original_max_position_embeddings=original,
            beta_fast=float(params.get("beta_fast") or 32),
            beta_slow=float(params.get("beta_slow") or 1),
            mscale=params.get("mscale"),
            mscale_all_dim=params.get("mscale_all_dim"),
            attention_factor=params.get("attention_factor"),
            truncate=bool(params.get("truncate", True)),
        )


# transformers' DeepseekV3Config defaults (the full DeepSeek-V3 shape): a config.json that omits a field
# means this value, exactly as transformers reads it.
V3_DEFAULTS: dict[str, Any] = {
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "qk_nope_head_dim": 128, "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "norm_topk_prob": True, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False, "rope_interleave": True, "attention_bias": False,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeepseekV3Config:
    """The fields of a `deepseek_v3` config.json the engine uses."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    first_k_dense_replace: int
    routed_scaling_factor: float
    norm_topk_prob: bool
    kv_lora_rank: int
    q_lora_rank: int | None
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    rope_interleave: bool
    attention_bias: bool
    hidden_act: str
    rope: RopeConfig
    torch_dtype: str | None
    bos_token_id: int | None
    eos_token_id: int | list[int] | None
    model_type: str = "deepseek_v3"
    quantization: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> DeepseekV3Config:
        if raw.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"config.json: hidden_act: not implemented: {raw['hidden_act']!r} (silu is)")
        if raw.get("scoring_func", "sigmoid") != "sigmoid":
            raise ConfigError(f"config.json: scoring_func: not implemented: {raw['scoring_func']!r} (sigmoid is)")
        if raw.get("topk_method", "noaux_tc") != "noaux_tc":
            raise ConfigError(f"config.json: topk_method: not implemented: {raw['topk_method']!r} (noaux_tc is)")

        def get(name: str) -> Any:
            return raw.get(name, V3_DEFAULTS[name])

        cfg = cls(
            vocab_size=int(get("vocab_size")),
            hidden_size=int(get("hidden_size")),
            intermediate_size=int(get("intermediate_size")),
            moe_intermediate_size=int(get("moe_intermediate_size")),
            num_hidden_layers=int(get("num_hidden_layers")),
            num_attention_heads=int(get("num_attention_heads")),
            n_routed_experts=int(get("n_routed_experts")),
            n_shared_experts=int(get("n_shared_experts") or 0),
            num_experts_per_tok=int(get("num_experts_per_tok")),
            n_group=int(get("n_group") or 1),
            topk_group=int(get("topk_group") or 1),
            first_k_dense_replace=int(get("first_k_dense_replace") or 0),
            routed_scaling_factor=float(get("routed_scaling_factor")),
            norm_topk_prob=bool(get("norm_topk_prob")),
            kv_lora_rank=int(get("kv_lora_rank")),
            q_lora_rank=None if get("q_lora_rank") is None else int(get("q_lora_rank")),
            qk_rope_head_dim=int(get("qk_rope_head_dim")),
            qk_nope_head_dim=int(get("qk_nope_head_dim")),
            v_head_dim=int(get("v_head_dim")),
            max_position_embeddings=int(get("max_position_embeddings")),
            rms_norm_eps=float(get("rms_norm_eps")),
            tie_word_embeddings=bool(get("tie_word_embeddings")),
            rope_interleave=bool(get("rope_interleave")),
            attention_bias=bool(get("attention_bias")),
            hidden_act="silu",
            rope=RopeConfig.from_hf(raw),
            torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=raw.get("eos_token_id"),
            model_type=str(raw.get("model_type", "deepseek_v3")),
            quantization=raw.get("quantization_config"),
            raw=raw,
        )
        if cfg.n_routed_experts % cfg.n_group:
            raise ConfigError("config.json: n_routed_experts must be divisible by n_group")
        if cfg.topk_group > cfg.n_group:
            raise ConfigError("config.json: topk_group must be <= n_group")
        return cfg
