"""Everything the harness knows about architectures, in one table.

Add a family by adding a row: where its blocks live, the attention module inside a block and
that module's output projection (whose input is the per-head output z, split by head). A family is
served only if its attention goes through transformers' attention interface (the capture engine
replaces that function) with nothing the engine would leave out; the others are refused, with why.
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
    logit_softcap: bool = False  # the *ForCausalLM caps its logits at config.final_logit_softcapping


def _row(model_type: str, hf_class: str, **kw) -> tuple[str, Arch]:
    """The Llama layout most families share: model.layers[i].self_attn.o_proj."""
    return model_type, Arch(model_type, hf_class, kw.pop("blocks", "model.layers"), kw.pop("attention", "self_attn"),
                            kw.pop("out_proj", "o_proj"), **kw)


ARCHS = dict([
    _row("gpt_neox", "GPTNeoXForCausalLM", blocks="gpt_neox.layers", attention="attention", out_proj="dense"),
    _row("olmo", "OlmoForCausalLM"),
    _row("olmoe", "OlmoeForCausalLM"),
    _row("llama", "LlamaForCausalLM"),
    _row("mistral", "MistralForCausalLM"),  # one sliding window for every layer
    _row("qwen2", "Qwen2ForCausalLM"),
    _row("qwen3", "Qwen3ForCausalLM"),  # QK-norm
    _row("olmo2", "Olmo2ForCausalLM"),
    _row("olmo3", "Olmo3ForCausalLM"),  # sliding windows per layer
    _row("phi3", "Phi3ForCausalLM"),  # fused qkv_proj
    _row("gemma", "GemmaForCausalLM"),
    _row("gemma2", "Gemma2ForCausalLM", logit_softcap=True),  # softcapped attention scores and logits
    _row("gemma3_text", "Gemma3ForCausalLM", logit_softcap=True),
    # The multimodal wrapper: its language model under model.language_model; it never caps its logits.
    _row("gemma3", "Gemma3ForConditionalGeneration", blocks="model.language_model.layers"),
    _row("smollm3", "SmolLM3ForCausalLM"),  # no rotary on every 4th layer
    _row("starcoder2", "Starcoder2ForCausalLM"),
    _row("gpt2", "GPT2LMHeadModel", blocks="transformer.h", attention="attn", out_proj="c_proj"),  # Conv1D
    # ALiBi (falcon-rw) reaches the attention function as a float mask, which the engine adds to its scores.
    _row("falcon", "FalconForCausalLM", blocks="transformer.h", attention="self_attention", out_proj="dense"),
])

_OUTSIDE = "attention is computed inside the module, transformers' attention interface is never called"
_RECURRENT = "no attention (a recurrent model)"
REFUSED = {
    "bloom": f"ALiBi: {_OUTSIDE}",
    "mpt": f"ALiBi: {_OUTSIDE}",
    "gpt_neo": _OUTSIDE,
    "gpt_neox_japanese": _OUTSIDE,
    "gpt_oss": "learned sink logits (s_aux) join the softmax, which the engine's attention statistics leave out",
    "mamba": _RECURRENT, "mamba2": _RECURRENT, "falcon_mamba": _RECURRENT, "rwkv": _RECURRENT, "xlstm": _RECURRENT,
}


class ArchError(HarnessError, ValueError):
    pass


def arch_of(config) -> Arch:
    kind = getattr(config, "model_type", config)
    if kind not in ARCHS:
        why = f": {REFUSED[kind]}" if kind in REFUSED else ""
        raise ArchError(f"architecture '{kind}' is not supported{why} (supported: {', '.join(ARCHS)})")
    return ARCHS[kind]


@dataclass(frozen=True)
class HeadLayout:
    n_layers: int
    n_heads: int
    d_head: int
    n_kv_heads: int


def _as_config(config):
    """A transformers config: config.json's fields (a dict or namespace) read the way transformers reads them, so
    that aliases (GPT-2's n_head) and derived fields (Falcon's multi-query k/v heads) come out as for the model."""
    if hasattr(config, "to_dict"):
        return config
    fields = dict(config if isinstance(config, dict) else vars(config))
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(**fields)
    except (ValueError, TypeError, KeyError):  # an unknown model_type: its fields as they are
        return _Namespace(fields)


class _Namespace:
    def __init__(self, fields: dict):
        self.__dict__.update(fields)


def text_config(config):
    """The language model's config: a multimodal wrapper nests it under `text_config`."""
    config = _as_config(config)
    if hasattr(config, "get_text_config"):
        return config.get_text_config()
    nested = getattr(config, "text_config", None)
    return _as_config(nested) if nested is not None else config


def head_layout(config) -> HeadLayout:
    config = text_config(config)
    h = config.num_attention_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // h
    kv = getattr(config, "num_key_value_heads", None) or h
    return HeadLayout(config.num_hidden_layers, h, d, kv)


def final_logits(model, logits: torch.Tensor) -> torch.Tensor:
    """What the *ForCausalLM does to lm_head's output (gemma2: tanh(x / cap) * cap)."""
    cap = getattr(model.config, "final_logit_softcapping", None) if arch_of(model.config).logit_softcap else None
    return torch.tanh(logits / cap) * cap if cap else logits


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
