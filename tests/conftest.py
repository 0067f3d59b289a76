"""Shared fixtures: tiny real models of the three architectures (no mocks)."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # CI machines have 2 cores; keep one free
os.environ.setdefault("WANDB_SILENT", "true")

from transformers import AutoModelForCausalLM, GPTNeoXConfig, OlmoConfig, OlmoeConfig  # noqa: E402

ARCHS = ("gpt_neox", "olmo", "olmoe")
VOCAB = 97


def tiny_config(arch: str, vocab: int = VOCAB, layers: int = 2, heads: int = 4, d_model: int = 64):
    # A large init makes attention peaked, so comparisons are not trivially near-uniform.
    common = dict(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=heads,
                  initializer_range=0.3, max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if arch == "gpt_neox":
        return GPTNeoXConfig(intermediate_size=4 * d_model, rotary_pct=0.25, **common)
    if arch == "olmo":
        return OlmoConfig(intermediate_size=4 * d_model, clip_qkv=4.0, **common)
    return OlmoeConfig(intermediate_size=2 * d_model, num_experts=4, num_experts_per_tok=2, **common)


def tiny_model(arch: str, seed: int = 0, attn: str = "eager", **kw):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, **kw), attn_implementation=attn).eval()


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param

# Tests read model presets with OmegaConf directly (no Hydra): the resolver their seed variants are named with.
from harness.common import seeds  # noqa: E402

seeds.register()
