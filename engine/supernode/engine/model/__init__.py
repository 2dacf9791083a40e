"""Model registry: `model_type` from config.json -> (config parser, nn.Module class).

Add a family (e.g. `deepseek_v4`) by writing its config parser and module and listing it here; the
runner, loader and KV cache go through this interface only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import torch

from supernode.engine.config import ConfigError
from supernode.engine.model.config import DeepseekV3Config
from supernode.engine.model.deepseek_v3 import DeepseekV3ForCausalLM
from supernode.engine.model.deepseek_v4 import DeepseekV4ForCausalLM
from supernode.engine.model.paged import AttentionMetadata
from supernode.engine.model.v4_config import DeepseekV4Config
from supernode.engine.parallel import ParallelContext


class CausalLM(Protocol):
    cfg: Any

    def kv_cache_dim(self) -> int: ...
    def skip_checkpoint_key(self, key: str) -> bool: ...
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...
    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata, kv_caches: list[torch.Tensor]
    ) -> torch.Tensor: ...


ModelEntry = tuple[Callable[[dict[str, Any]], Any], Callable[[Any, ParallelContext], torch.nn.Module]]

REGISTRY: Mapping[str, ModelEntry] = MappingProxyType(
    {
        "deepseek_v3": (DeepseekV3Config.from_hf, DeepseekV3ForCausalLM),
        "deepseek_v4": (DeepseekV4Config.from_hf, DeepseekV4ForCausalLM),
    }
)


def parse_model_config(raw: dict[str, Any]) -> Any:
    """Parse config.json with the parser registered for its `model_type`."""
    model_type = str(raw.get("model_type"))
    if model_type not in REGISTRY:
        raise ConfigError(f"config.json: model_type: not implemented: {model_type!r} (supported: {sorted(REGISTRY)})")
    return REGISTRY[model_type][0](raw)


def build_model(model_cfg: Any, pctx: ParallelContext) -> torch.nn.Module:
    return REGISTRY[model_cfg.model_type][1](model_cfg, pctx)
