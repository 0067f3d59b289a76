"""Everything the harness knows about architectures, in one table.

Add a family by adding a row: where its blocks live, the attention module inside a block and
that module's output projection (whose input is the per-head output z, split by head).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.common.errors import HarnessError


@dataclass(frozen=True)
class Arch:
    model_type: str  # transformers' config.model_type
    hf_class: str
    blocks: str  # dotted path from the *ForCausalLM to the ModuleList of blocks
    attention: str  # attribute of a block
    out_proj: str  # attribute of the attention module


ARCHS = {
    "gpt_neox": Arch("gpt_neox", "GPTNeoXForCausalLM", "gpt_neox.layers", "attention", "dense"),
    "olmo": Arch("olmo", "OlmoForCausalLM", "model.layers", "self_attn", "o_proj"),
    "olmoe": Arch("olmoe", "OlmoeForCausalLM", "model.layers", "self_attn", "o_proj"),
}


class ArchError(HarnessError, ValueError):
    pass


def arch_of(config) -> Arch:
    kind = getattr(config, "model_type", config)
    if kind not in ARCHS:
        raise ArchError(f"unsupported architecture '{kind}' (supported: {', '.join(ARCHS)})")
    return ARCHS[kind]


@dataclass(frozen=True)
class HeadLayout:
    n_layers: int
    n_heads: int
    d_head: int
    n_kv_heads: int


def head_layout(config) -> HeadLayout:
    h = config.num_attention_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // h
    kv = getattr(config, "num_key_value_heads", None) or h
    return HeadLayout(config.num_hidden_layers, h, d, kv)


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def blocks(model) -> torch.nn.ModuleList:
    return _get(model, arch_of(model.config).blocks)


def attention_modules(model) -> list[torch.nn.Module]:
    a = arch_of(model.config)
    return [getattr(b, a.attention) for b in blocks(model)]


def out_projections(model) -> list[torch.nn.Module]:
    a = arch_of(model.config)
    return [getattr(att, a.out_proj) for att in attention_modules(model)]
