"""Typed view of a DeepSeek-V4 `config.json` (transformers `deepseek_v4`), without transformers at runtime.

Both published spellings of the per-layer compression are read: a `layer_types` list (with a
`compress_rates` map per layer type) or the older per-layer `compress_ratios` integers (0 = sliding
window only, otherwise the window the compressor pools). A missing field means transformers' default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supernode.engine.config import ConfigError
from supernode.engine.model.config import RopeConfig

SLIDING, CSA, HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
LAYER_TYPES = (SLIDING, CSA, HCA)
MLP_TYPES = ("hash_moe", "moe")
SCORING = ("sqrtsoftplus", "sigmoid", "softmax")
_DEFAULT_RATES = {CSA: 4, HCA: 128}

# transformers' DeepseekV4Config defaults (the V4-Flash shape).
V4_DEFAULTS: dict[str, Any] = {
    "vocab_size": 129280, "hidden_size": 4096, "moe_intermediate_size": 2048, "num_hidden_layers": 43,
    "num_attention_heads": 64, "head_dim": 512, "q_lora_rank": 1024, "num_experts_per_tok": 6,
    "n_routed_experts": 256, "n_shared_experts": 1, "scoring_func": "sqrtsoftplus", "routed_scaling_factor": 1.5,
    "max_position_embeddings": 1048576, "rope_theta": 10000.0, "compress_rope_theta": 160000.0, "hc_mult": 4,
    "hc_sinkhorn_iters": 20, "hc_eps": 1e-6, "swiglu_limit": 10.0, "sliding_window": 128, "o_groups": 8,
    "o_lora_rank": 1024, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False, "num_hash_layers": 3,
}  # fmt: skip


def _layer_types(raw: dict[str, Any], n: int, rates: dict[str, int]) -> list[str]:
    if raw.get("layer_types") is not None:
        types = list(raw["layer_types"])[:n]
    elif raw.get("compress_ratios") is not None:
        by_rate = {0: SLIDING, **{r: t for t, r in rates.items()}}
        bad = [r for r in raw["compress_ratios"][:n] if r not in by_rate]
        if bad:
            raise ConfigError(f"config.json: compress_ratios: values {bad} match no layer type (known: {by_rate})")
        types = [by_rate[r] for r in raw["compress_ratios"][:n]]
    else:  # transformers' default: two HCA layers, then CSA/HCA alternating
        types = [HCA] * min(n, 2) + [CSA if i % 2 else HCA for i in range(max(n - 2, 0))]
    if len(types) != n:
        raise ConfigError(f"config.json: layer_types: {len(types)} entries for num_hidden_layers={n}")
    bad = [t for t in types if t not in LAYER_TYPES]
    if bad:
        raise ConfigError(f"config.json: layer_types: not implemented: {bad} (known: {LAYER_TYPES})")
    return types


def _rates(raw: dict[str, Any]) -> dict[str, int]:
    rates = dict(_DEFAULT_RATES)
    rates.update({k: int(v) for k, v in (raw.get("compress_rates") or {}).items()})
    if raw.get("compress_rate_csa") is not None:
        rates[CSA] = int(raw["compress_rate_csa"])
    if raw.get("compress_rate_hca") is not None:
        rates[HCA] = int(raw["compress_rate_hca"])
    # Published V4 configs list one ratio per layer (`compress_ratios`); the two non-zero values are the
    # CSA (smaller) and HCA (larger) windows.
    ratios = sorted({int(r) for r in raw.get("compress_ratios") or [] if int(r)})
    if raw.get("compress_rates") is None and len(ratios) == 2:
        rates[CSA], rates[HCA] = ratios
    for name, r in rates.items():
        if r < 1:
            raise ConfigError(f"config.json: compress_rates.{name}: must be positive, got {r}")
    return rates


def _rope(raw: dict[str, Any], which: str, theta: float) -> RopeConfig:
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    if isinstance(params.get(which), dict):
        params = dict(params[which])
    elif which == "main":  # flat form: scaling (e.g. YaRN) applies to the compressed layers only
        params = {"rope_type": "default"}
    params.setdefault("rope_theta", theta)
    if params.get("rope_type", params.get("type", "default")) == "yarn":
        params.setdefault("attention_factor", 1.0)  # V4 does not scale cos/sin by YaRN's mscale
    max_pos = raw.get("max_position_embeddings") or V4_DEFAULTS["max_position_embeddings"]
    return RopeConfig.from_hf({"max_position_embeddings": max_pos, "rope_parameters": params})


@dataclass(frozen=True, slots=True)
class DeepseekV4Config:
    vocab_size: int
    hidden_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int
    q_lora_rank: int
    qk_rope_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    scoring_func: str
    routed_scaling_factor: float
    max_position_embeddings: int
    layer_types: tuple[str, ...]
    mlp_layer_types: tuple[str, ...]
    compress_rates: dict[str, int]
    hc_mult: int
    hc_sinkhorn_iters: int
    hc_eps: float
    swiglu_limit: float
    sliding_window: int
    o_groups: int
    o_lora_rank: int
    index_n_heads: int
    index_head_dim: int
    index_topk: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    rope_main: RopeConfig
    rope_compress: RopeConfig
    torch_dtype: str | None
    bos_token_id: int | None
    eos_token_id: int | list[int] | None
    model_type: str = "deepseek_v4"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def ratio(self, layer: int) -> int:
        """Compression window of a layer (0: sliding window only)."""
        t = self.layer_types[layer]
        return 0 if t == SLIDING else self.compress_rates[t]

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> DeepseekV4Config:
        def get(name: str) -> Any:
            value = raw.get(name)
            return V4_DEFAULTS[name] if value is None else value

        if raw.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"config.json: hidden_act: not implemented: {raw['hidden_act']!r} (silu is)")
        if get("scoring_func") not in SCORING:
            raise ConfigError(f"config.json: scoring_func: not implemented: {raw['scoring_func']!r} (one of {SCORING})")
        if int(raw.get("num_key_value_heads") or 1) != 1:
            raise ConfigError(f"config.json: num_key_value_heads: not implemented: {raw['num_key_value_heads']} (1 is)")
        for flag in ("attention_bias", "mlp_bias"):
            if raw.get(flag):
                raise ConfigError(f"config.json: {flag}: not implemented: true")
        n = int(get("num_hidden_layers"))
        rates = _rates(raw)
        head_dim = int(get("head_dim"))
        if raw.get("partial_rotary_factor") is not None:
            rope_dim = int(head_dim * float(raw["partial_rotary_factor"]))
        else:
            rope_dim = int(raw.get("qk_rope_head_dim") or 64)
        mlp_types = raw.get("mlp_layer_types")
        if mlp_types is None:
            hashed = int(get("num_hash_layers"))
            mlp_types = ["hash_moe"] * min(n, hashed) + ["moe"] * max(0, n - hashed)
        mlp_types = list(mlp_types)[:n]
        if len(mlp_types) != n or any(t not in MLP_TYPES for t in mlp_types):
            raise ConfigError(f"config.json: mlp_layer_types: need {n} entries from {MLP_TYPES}, got {mlp_types}")
        cfg = cls(
            vocab_size=int(get("vocab_size")),
            hidden_size=int(get("hidden_size")),
            moe_intermediate_size=int(get("moe_intermediate_size")),
            num_hidden_layers=n,
            num_attention_heads=int(get("num_attention_heads")),
            head_dim=head_dim,
            q_lora_rank=int(get("q_lora_rank")),
            qk_rope_head_dim=rope_dim,
            n_routed_experts=int(get("n_routed_experts")),
            n_shared_experts=int(get("n_shared_experts")),
            num_experts_per_tok=int(get("num_experts_per_tok")),
            scoring_func=str(get("scoring_func")),
            routed_scaling_factor=float(get("routed_scaling_factor")),
            max_position_embeddings=int(get("max_position_embeddings")),
            layer_types=tuple(_layer_types(raw, n, rates)),
            mlp_layer_types=tuple(mlp_types),
            compress_rates=rates,
            hc_mult=int(get("hc_mult")),
            hc_sinkhorn_iters=int(get("hc_sinkhorn_iters")),
            hc_eps=float(get("hc_eps")),
            swiglu_limit=float(get("swiglu_limit")),
            sliding_window=int(get("sliding_window")),
            o_groups=int(get("o_groups")),
            o_lora_rank=int(get("o_lora_rank")),
            index_n_heads=int(get("index_n_heads")),
            index_head_dim=int(get("index_head_dim")),
            index_topk=int(get("index_topk")),
            rms_norm_eps=float(get("rms_norm_eps")),
            tie_word_embeddings=bool(get("tie_word_embeddings")),
            rope_main=_rope(raw, "main", float(get("rope_theta"))),
            rope_compress=_rope(raw, "compress", float(get("compress_rope_theta"))),
            torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=raw.get("eos_token_id"),
            raw=raw,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.rope_main.rope_type != "default":
            raise ConfigError("config.json: rope_parameters.main.rope_type: not implemented (default is)")
        if (self.num_attention_heads * self.head_dim) % self.o_groups:
            raise ConfigError("config.json: o_groups: must divide num_attention_heads * head_dim")
        if self.qk_rope_head_dim % 2 or self.qk_rope_head_dim > min(self.head_dim, self.index_head_dim):
            raise ConfigError("config.json: qk_rope_head_dim: must be even and <= head_dim and index_head_dim")
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ConfigError("config.json: num_experts_per_tok: must be <= n_routed_experts")
        if self.sliding_window < 1 or self.hc_mult < 1 or self.hc_sinkhorn_iters < 1:
            raise ConfigError("config.json: sliding_window, hc_mult and hc_sinkhorn_iters must be positive")
