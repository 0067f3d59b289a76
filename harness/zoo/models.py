"""Tiny configs of the three suite architectures, built with transformers' own config classes."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, OlmoConfig, OlmoeConfig

from harness.zoo.tasks import BOS


def make_config(arch: str, layers: int, heads: int, d_model: int, vocab: int, max_len: int = 512,
                mlp_mult: int = 4, experts: int = 8, top_k: int = 2, clip_qkv: float | None = None,
                rotary_pct: float = 1.0, init: float = 0.02):
    common = dict(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=heads,
                  max_position_embeddings=max_len, initializer_range=init,
                  bos_token_id=BOS, eos_token_id=BOS, pad_token_id=BOS)
    if arch == "gpt_neox":
        # Full rotary: Pythia's 0.25 delayed induction badly at this size.
        rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": rotary_pct}
        return GPTNeoXConfig(intermediate_size=mlp_mult * d_model, rope_parameters=rope, **common)
    if arch == "olmo":
        return OlmoConfig(intermediate_size=mlp_mult * d_model, clip_qkv=clip_qkv, **common)
    if arch == "olmoe":
        # Experts are narrow (OLMoE: d_ff per expert = d_model/2 x ... ); top-k of `experts`.
        return OlmoeConfig(intermediate_size=mlp_mult * d_model, num_experts=experts, num_experts_per_tok=top_k,
                           clip_qkv=clip_qkv, **common)
    raise ValueError(f"unknown zoo arch '{arch}' (valid: gpt_neox, olmo, olmoe)")


def make_model(arch: str, seed: int, **shape):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(make_config(arch, **shape), attn_implementation="sdpa")
