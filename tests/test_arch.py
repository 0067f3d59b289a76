"""The real suites' shapes (conf/model) against transformers: head layout and module table, at reduced depth."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, GPTNeoXConfig, OlmoConfig, OlmoeConfig

from harness.capture.arch import ARCHS, arch_of, head_layout, out_projections
from harness.capture.engine import Engine, Needs

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def reduced(name: str):
    """The model's real attention shape (d_model, heads, d_head) with 2 layers and a small vocab/MLP."""
    m = OmegaConf.load(CONF / f"{name}.yaml")
    common = dict(hidden_size=m.heads * m.d_head, num_attention_heads=m.heads, num_hidden_layers=2, vocab_size=512)
    if m.arch == "gpt_neox":
        return m, GPTNeoXConfig(intermediate_size=256, rotary_pct=0.25, **common)
    if m.arch == "olmo":
        return m, OlmoConfig(intermediate_size=256, **common)
    return m, OlmoeConfig(intermediate_size=64, num_experts=4, num_experts_per_tok=2, **common)


@pytest.mark.parametrize("name", ["pythia-1b", "olmo-1b-0724", "olmoe-1b-7b-0924", "pythia-70m"])
def test_real_shapes(name):
    m, cfg = reduced(name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    assert type(model).__name__ == ARCHS[m.arch].hf_class == arch_of(model.config).hf_class
    layout = head_layout(model.config)
    assert (layout.n_heads, layout.d_head) == (m.heads, m.d_head)
    proj = out_projections(model)
    assert len(proj) == 2 and all(p.in_features == m.heads * m.d_head for p in proj)
    cap = Engine(model).run(torch.randint(0, 512, (2, 12)), Needs.of(rows=[-1], z=[-1]))
    assert cap.rows[-1].shape == (2, 2, m.heads, 12)
    assert cap.z[-1].shape == (2, 2, m.heads, m.d_head)


def test_unsupported_architecture_is_named():
    from harness.capture.arch import ArchError

    with pytest.raises(ArchError, match="llama.*supported: gpt_neox, olmo, olmoe"):
        arch_of("llama")
