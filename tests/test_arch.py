"""The architecture table (harness/capture/arch.py) against transformers' model classes, with every expected value
written out here per architecture (class names, module paths, head shapes): nothing is read from the table itself."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, GPTNeoXConfig, OlmoConfig, OlmoeConfig

from harness.capture.arch import arch_of, attention_modules, blocks, head_layout, out_projections
from harness.capture.engine import Engine, Needs

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

# Per architecture, from transformers' modeling_gpt_neox.py / modeling_olmo.py / modeling_olmoe.py:
# the *ForCausalLM class, its decoder-layer class, the attention class, the dotted path of the ModuleList of
# decoder layers and, inside a layer, the path of the attention output projection.
EXPECTED = {
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXLayer", "GPTNeoXAttention", "gpt_neox.layers", "attention.dense"),
    "olmo": ("OlmoForCausalLM", "OlmoDecoderLayer", "OlmoAttention", "model.layers", "self_attn.o_proj"),
    "olmoe": ("OlmoeForCausalLM", "OlmoeDecoderLayer", "OlmoeAttention", "model.layers", "self_attn.o_proj"),
    # from each family's models/<family>/modeling_<family>.py in transformers 5.25
    "llama": ("LlamaForCausalLM", "LlamaDecoderLayer", "LlamaAttention", "model.layers", "self_attn.o_proj"),
    "mistral": ("MistralForCausalLM", "MistralDecoderLayer", "MistralAttention", "model.layers", "self_attn.o_proj"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2DecoderLayer", "Qwen2Attention", "model.layers", "self_attn.o_proj"),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3DecoderLayer", "Qwen3Attention", "model.layers", "self_attn.o_proj"),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2DecoderLayer", "Olmo2Attention", "model.layers", "self_attn.o_proj"),
    "olmo3": ("Olmo3ForCausalLM", "Olmo3DecoderLayer", "Olmo3Attention", "model.layers", "self_attn.o_proj"),
    "phi3": ("Phi3ForCausalLM", "Phi3DecoderLayer", "Phi3Attention", "model.layers", "self_attn.o_proj"),
    "gemma": ("GemmaForCausalLM", "GemmaDecoderLayer", "GemmaAttention", "model.layers", "self_attn.o_proj"),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2DecoderLayer", "Gemma2Attention", "model.layers", "self_attn.o_proj"),
    "gemma3_text": ("Gemma3ForCausalLM", "Gemma3DecoderLayer", "Gemma3Attention", "model.layers", "self_attn.o_proj"),
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3DecoderLayer", "Gemma3Attention", "model.language_model.layers",
               "self_attn.o_proj"),
    "smollm3": ("SmolLM3ForCausalLM", "SmolLM3DecoderLayer", "SmolLM3Attention", "model.layers", "self_attn.o_proj"),
    "starcoder2": ("Starcoder2ForCausalLM", "Starcoder2DecoderLayer", "Starcoder2Attention", "model.layers",
                   "self_attn.o_proj"),
    "gpt2": ("GPT2LMHeadModel", "GPT2Block", "GPT2Attention", "transformer.h", "attn.c_proj"),
    "falcon": ("FalconForCausalLM", "FalconDecoderLayer", "FalconAttention", "transformer.h", "self_attention.dense"),
}
# The tiny configs of tests/test_architectures.py, their head layouts written out: (layers, heads, d_head, k/v heads)
# and the output projection's class.
NEW_LAYOUTS = {
    "llama": (3, 4, 24, 2, "Linear"), "mistral": (3, 4, 16, 2, "Linear"), "qwen2": (3, 4, 16, 1, "Linear"),
    "qwen3": (3, 4, 32, 2, "Linear"), "olmo2": (3, 4, 16, 2, "Linear"), "olmo3": (3, 4, 16, 2, "Linear"),
    "phi3": (3, 4, 16, 2, "Linear"), "gemma": (3, 4, 32, 1, "Linear"), "gemma2": (3, 4, 32, 2, "Linear"),
    "gemma3_text": (3, 4, 32, 2, "Linear"), "gemma3": (3, 4, 32, 2, "Linear"), "smollm3": (4, 4, 16, 2, "Linear"),
    "starcoder2": (3, 4, 16, 2, "Linear"), "gpt2": (3, 4, 16, 4, "Conv1D"), "falcon": (3, 4, 16, 1, "Linear"),
}

# The published checkpoints' attention shapes (their config.json: hidden_size / num_attention_heads).
PUBLISHED = {  # name: (arch, heads, d_head, layers)
    "pythia-1b": ("gpt_neox", 8, 256, 16),
    "olmo-1b-0724": ("olmo", 16, 128, 16),
    "olmoe-1b-7b-0924": ("olmoe", 16, 128, 16),
    "pythia-70m": ("gpt_neox", 8, 64, 6),
}


def tiny(arch: str, kv_heads: int | None = None, seed: int = 0):
    """3 layers, 4 query heads of 16 dims (d_model 64), eager attention; optionally grouped-query k/v heads."""
    cfg = tiny_config(arch, layers=3)
    if kv_heads is not None:
        cfg.num_key_value_heads = kv_heads
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


CASES = [("gpt_neox", None), ("olmo", None), ("olmoe", None), ("olmo", 2), ("olmoe", 1)]


@pytest.mark.parametrize("arch, kv_heads", CASES)
def test_modules_found_by_walking_the_model(arch, kv_heads):
    model = tiny(arch, kv_heads)
    lm_class, layer_class, attn_class, layers_path, proj_path = EXPECTED[arch]
    assert type(model).__name__ == lm_class
    assert arch_of(model.config).model_type == arch
    modules = dict(model.named_modules())
    # the decoder layers, found by class name, and the one ModuleList that holds them all, in order
    layer_names = [name for name, m in modules.items() if type(m).__name__ == layer_class]
    assert layer_names == [f"{layers_path}.{i}" for i in range(3)]
    parent = modules[layers_path]
    assert isinstance(parent, torch.nn.ModuleList) and [modules[n] for n in layer_names] == list(parent)
    assert blocks(model) is parent
    # attention modules: the attention class inside each layer
    attn_names = [name for name, m in modules.items() if type(m).__name__ == attn_class]
    assert [n.rsplit(".", 1)[0] for n in attn_names] == layer_names
    assert all(a is modules[n] for a, n in zip(attention_modules(model), attn_names, strict=True))
    # output projections: nn.Linear from n_heads * d_head (4 x 16) to d_model, at the literal path
    proj = out_projections(model)
    assert len(proj) == 3
    for i, p in enumerate(proj):
        assert p is modules[f"{layers_path}.{i}.{proj_path}"]
        assert isinstance(p, torch.nn.Linear) and (p.in_features, p.out_features) == (4 * 16, 64)
    layout = head_layout(model.config)
    assert (layout.n_layers, layout.n_heads, layout.d_head, layout.n_kv_heads) == (3, 4, 16, kv_heads or 4)


def values(model, arch: str, layer: int, x: torch.Tensor, n_heads: int = 4, d: int = 16) -> torch.Tensor:
    """(B, H, T, d) value vectors of `layer` from the attention input x, as the transformers classes compute them:
    GPT-NeoX's fused query_key_value viewed as (B, T, H, 3d) with v the last d; OLMo/OLMoE's v_proj, clipped at
    clip_qkv, its k/v heads shared by consecutive query heads under grouped-query attention."""
    B, T, _ = x.shape
    if arch == "gpt_neox":
        att = model.gpt_neox.layers[layer].attention
        return att.query_key_value(x).view(B, T, n_heads, 3 * d)[..., 2 * d:].transpose(1, 2)
    att = model.model.layers[layer].self_attn
    v = att.v_proj(x)
    if model.config.clip_qkv is not None:
        v = v.clamp(-model.config.clip_qkv, model.config.clip_qkv)
    v = v.view(B, T, -1, d).transpose(1, 2)
    return v.repeat_interleave(n_heads // v.shape[1], dim=1)


@pytest.mark.parametrize("arch, kv_heads", CASES)
def test_out_projection_input_is_attention_times_values(arch, kv_heads):
    """A forward pre-hook on each out_projections module sees softmax(QK^T) V by head, concatenated: eager
    attention's probabilities (output_attentions=True) times the values recomputed from the layer's weights."""
    model = tiny(arch, kv_heads)
    ids = torch.randint(1, 97, (3, 21), generator=torch.Generator().manual_seed(1))
    seen, attn_in = {}, {}
    hooks = [p.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0]))
             for i, p in enumerate(out_projections(model))]
    hooks += [a.register_forward_pre_hook(
        lambda m, a, kw, i=i: attn_in.__setitem__(i, kw["hidden_states"] if "hidden_states" in kw else a[0]),
        with_kwargs=True) for i, a in enumerate(attention_modules(model))]
    try:
        with torch.no_grad():
            out = model(ids, output_attentions=True)
            B, T = ids.shape
            for layer, A in enumerate(out.attentions):  # A: (B, H, T, T)
                want = (A @ values(model, arch, layer, attn_in[layer])).transpose(1, 2).reshape(B, T, 4 * 16)
                assert seen[layer].shape == (B, T, 64)
                torch.testing.assert_close(seen[layer], want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
                # a non-trivial comparison: head 1's slice is not all zeros
                assert not torch.equal(seen[layer][..., 16:32], torch.zeros_like(want[..., 16:32]))
    finally:
        for h in hooks:
            h.remove()


def reduced(name: str):
    """The model's real attention shape (d_model, heads, d_head) with 2 layers and a small vocab/MLP."""
    m = OmegaConf.load(CONF / f"{name}.yaml")
    common = dict(hidden_size=m.heads * m.d_head, num_attention_heads=m.heads, num_hidden_layers=2, vocab_size=512)
    if m.arch == "gpt_neox":
        return m, GPTNeoXConfig(intermediate_size=256, rotary_pct=0.25, **common)
    if m.arch == "olmo":
        return m, OlmoConfig(intermediate_size=256, **common)
    return m, OlmoeConfig(intermediate_size=64, num_experts=4, num_experts_per_tok=2, **common)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_real_shapes(name):
    arch, heads, d_head, layers = PUBLISHED[name]
    m, cfg = reduced(name)
    assert (m.arch, m.heads, m.d_head, m.layers) == (arch, heads, d_head, layers)  # conf/model as published
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    assert type(model).__name__ == EXPECTED[arch][0]
    layout = head_layout(model.config)
    assert (layout.n_layers, layout.n_heads, layout.d_head) == (2, heads, d_head)
    proj = out_projections(model)
    modules = dict(model.named_modules())
    assert [id(p) for p in proj] == [id(modules[f"{EXPECTED[arch][3]}.{i}.{EXPECTED[arch][4]}"]) for i in range(2)]
    assert all(isinstance(p, torch.nn.Linear) and p.in_features == heads * d_head for p in proj)
    cap = Engine(model).run(torch.randint(0, 512, (2, 12)), Needs.of(rows=[-1], z=[-1]))
    assert cap.rows[-1].shape == (2, 2, heads, 12)
    assert cap.z[-1].shape == (2, 2, heads, d_head)


@pytest.mark.parametrize("kind", list(NEW_LAYOUTS))
def test_new_rows_found_by_walking_the_model(kind):
    from test_architectures import config, tiny

    model = tiny(kind, seed=0)
    lm_class, layer_class, attn_class, layers_path, proj_path = EXPECTED[kind]
    L, H, d, kv, proj_class = NEW_LAYOUTS[kind]
    assert type(model).__name__ == lm_class and arch_of(model.config).model_type == kind
    modules = dict(model.named_modules())
    layer_names = [name for name, m in modules.items() if type(m).__name__ == layer_class]
    assert layer_names == [f"{layers_path}.{i}" for i in range(L)]
    assert blocks(model) is modules[layers_path]
    attn_names = [name for name, m in modules.items() if type(m).__name__ == attn_class]
    assert attention_modules(model) == [modules[n] for n in attn_names]
    proj = out_projections(model)
    assert proj == [modules[f"{layers_path}.{i}.{proj_path}"] for i in range(L)]
    assert all(isinstance(p, torch.nn.Linear) if proj_class == "Linear" else type(p).__name__ == proj_class
               for p in proj)  # falcon's FalconLinear is an nn.Linear
    # its input is the per-head output z: H x d wide (Conv1D stores its weight as (in, out))
    assert all((p.weight.shape[0] if proj_class == "Conv1D" else p.in_features) == H * d for p in proj)
    layout = head_layout(model.config)
    assert (layout.n_layers, layout.n_heads, layout.d_head, layout.n_kv_heads) == (L, H, d, kv)
    # the same layout from config.json's fields, as check_context reads them before any weights
    assert head_layout(config(kind).to_dict()) == layout


def test_unsupported_architecture_is_named():
    from harness.capture.arch import ArchError

    with pytest.raises(ArchError, match="'bloom' is not supported: ALiBi.*supported: gpt_neox, olmo, olmoe, llama"):
        arch_of("bloom")
