"""Load HF safetensors checkpoints (single file or sharded by index) into a model, shard by shard.

Every model parameter carries a `weight_loader(param, slice)`; we hand it a lazy safetensors slice so a
tensor-parallel rank reads only its rows/columns and an expert-parallel rank never reads other experts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from supernode.engine.model.layers import full_loader

log = logging.getLogger(__name__)

FP8_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E8M0", "F4")


class WeightsError(RuntimeError):
    """The checkpoint cannot be loaded (missing file/tensor, shape mismatch, unsupported format)."""


def checkpoint_files(model_dir: str) -> list[str]:
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map: dict[str, str] = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    elif os.path.isfile(os.path.join(model_dir, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise WeightsError(f"no model.safetensors or model.safetensors.index.json in {model_dir!r}")
    paths = [os.path.join(model_dir, f) for f in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise WeightsError(f"checkpoint shard(s) missing: {missing}")
    return paths


def refuse_quantized(raw_config: dict[str, Any]) -> None:
    quant = raw_config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?")
        if method == "fp8" or "fp8" in str(quant.get("fmt", "")):
            raise NotImplementedError("not implemented: FP8 weights (block-scaled fp8 checkpoints); use bf16/fp32")
        raise NotImplementedError(f"not implemented: quantized weights (quant_method={method!r})")


def _iter_slices(paths: list[str]) -> Iterator[tuple[str, Any]]:
    for path in paths:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not mappings
                yield key, f.get_slice(key)


def load_weights(model: nn.Module, model_dir: str, raw_config: dict[str, Any]) -> int:
    """Load every parameter of `model` from `model_dir`; return the number of tensors read.

    Unknown checkpoint keys and parameters left unloaded are errors (a silent partial load is a wrong model).
    """
    refuse_quantized(raw_config)
    params = dict(model.named_parameters())
    skip = getattr(model, "skip_checkpoint_key", lambda _k: False)
    rename = getattr(model, "checkpoint_key", lambda k: k)  # a family whose checkpoints use other names
    loaded: set[str] = set()
    for raw_key, sl in _iter_slices(checkpoint_files(model_dir)):
        key = rename(raw_key)
        dtype = sl.get_dtype()
        if dtype in FP8_DTYPES or key.endswith("_scale_inv"):
            raise NotImplementedError(f"not implemented: FP8 weights (tensor {key!r} is {dtype})")
        if key in params:
            loader = getattr(params[key], "weight_loader", full_loader)
            try:
                loader(params[key], sl)
            except ValueError as e:
                raise WeightsError(f"{key}: {e}") from e
            loaded.add(key)
        elif not skip(key):
            raise WeightsError(f"checkpoint tensor {key!r} has no parameter in the model (wrong model_type/config?)")
    missing = sorted(set(params) - loaded)
    if missing:
        raise WeightsError(f"{len(missing)} parameter(s) not in the checkpoint, e.g. {missing[:5]}")
    log.info("loaded %d tensors from %s", len(loaded), model_dir)
    return len(loaded)


def torch_dtype(name: str | None, default: torch.dtype = torch.float32) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name in (None, "auto"):
        return default
    if name not in table:
        raise ValueError(f"dtype: not implemented: {name!r} (one of {sorted(table)})")
    return table[name]
