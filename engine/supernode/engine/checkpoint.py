"""Random-initialised DeepSeek-V3 / V4 checkpoints with a locally trained tokenizer (tests, local runtime)."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from supernode.api import chattokens as tokens
from supernode.api.tokenchunks import DEEPSEEK_SPLITS
from supernode.engine.corpus import corpus
from supernode.engine.model import build_model, parse_model_config
from supernode.engine.parallel import SINGLE
from supernode.engine.presets_v4 import V4_COMMON, V4_PRESETS, init_v4_, keep_fp32

_COMMON: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_act": "silu",
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_interleave": True,
    "attention_bias": False,
    "initializer_range": 0.02,
    "num_nextn_predict_layers": 0,
}

PRESETS: dict[str, dict[str, Any]] = {
    # ~0.25M parameters: unit tests, e2e, the local runtime's default.
    "tiny": {
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
        "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1,
        "kv_lora_rank": 32, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                            "original_max_position_embeddings": 1024, "mscale": 1.0, "mscale_all_dim": 1.0,
                            "beta_fast": 32, "beta_slow": 1},
    },
    # ~30M parameters: benchmarks (a 1,024-token prefill takes a noticeable time on 2 CPU cores).
    "small": {
        "vocab_size": 1024, "hidden_size": 384, "intermediate_size": 1024, "moe_intermediate_size": 256,
        "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 8,
        "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1,
        "kv_lora_rank": 128, "q_lora_rank": 192, "qk_rope_head_dim": 32, "qk_nope_head_dim": 32, "v_head_dim": 32,
        "max_position_embeddings": 8192,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                            "original_max_position_embeddings": 2048, "mscale": 1.0, "mscale_all_dim": 1.0,
                            "beta_fast": 32, "beta_slow": 1},
    },
}  # fmt: skip


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """Byte-level BPE on the built-in corpus with DeepSeek V3's pre-tokenizer (digit groups, CJK runs, its main
    split, then bytes), as the real checkpoints have; the DeepSeek special tokens get ids 0.. in
    tokens.SPECIAL_TOKENS order."""
    tok = Tokenizer(models.BPE())
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in DEEPSEEK_SPLITS]
    tok.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                   use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(tokens.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    return tok


def _init_(model: torch.nn.Module, generator: torch.Generator, std: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("e_score_correction_bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def init_checkpoint(out_dir: str, preset: str = "tiny", seed: int = 0, dtype: str = "float32") -> dict[str, Any]:
    """Write config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json."""
    if preset not in PRESETS and preset not in V4_PRESETS:
        raise ValueError(f"preset: must be one of {sorted([*PRESETS, *V4_PRESETS])}, got {preset!r}")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype: must be float32 or bfloat16, got {dtype!r}")
    os.makedirs(out_dir, exist_ok=True)
    v4 = preset in V4_PRESETS
    config = {**V4_COMMON, **V4_PRESETS[preset]} if v4 else {**_COMMON, **PRESETS[preset]}
    tok = train_tokenizer(config["vocab_size"])
    config["vocab_size"] = tok.get_vocab_size()  # what the corpus allowed; embeddings match the tokenizer exactly
    config["bos_token_id"] = tok.token_to_id(tokens.BOS)
    config["eos_token_id"] = tok.token_to_id(tokens.EOS)
    config["pad_token_id"] = tok.token_to_id(tokens.PAD)
    config["torch_dtype"] = dtype
    model = build_model(parse_model_config(config), SINGLE)
    generator, std = torch.Generator().manual_seed(seed), config["initializer_range"]
    if v4:
        init_v4_(model, generator, std, config["n_routed_experts"])
    else:
        _init_(model, generator, std)
    target = torch.float32 if dtype == "float32" else torch.bfloat16
    state = {
        k: (v.to(target) if v.is_floating_point() and not (v4 and keep_fp32(k)) else v).contiguous()
        for k, v in model.state_dict().items()
    }
    for key in [k for k in state if k.endswith("gate.weight") or k.endswith("e_score_correction_bias")]:
        state[key] = state[key].float()  # the router stays fp32, as in DeepSeek's own checkpoints
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    _write_json(out_dir, "config.json", config)
    _write_json(
        out_dir,
        "generation_config.json",
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False},
    )
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    _write_json(
        out_dir,
        "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": tokens.BOS,
            "eos_token": tokens.EOS,
            "pad_token": tokens.PAD,
            "add_bos_token": False,
            "add_eos_token": False,
            "model_max_length": config["max_position_embeddings"],
        },
    )
    return config


def _write_json(out_dir: str, name: str, data: dict[str, Any]) -> None:
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
