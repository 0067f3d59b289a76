"""Every architecture in harness/capture/arch.py probed through `python -m harness model=local` equals eager attention.

Per architecture: two tiny random checkpoints (step0/, step1/) with what sets the family apart switched on (grouped
k/v heads, a sliding window shorter than the probe's T, softcapped scores, layers without rotary, Conv1D and 1/(layer+1)
scaling, head_dim != hidden / heads, ALiBi), weights scaled so attention is peaked. The golden values come from plain
eager attention (output_attentions=True, tests/reference.py) and, for the PR probe, from z read by a forward pre-hook on
the eager model's output projection: nothing from the capture engine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from reference import last_query_rows, study_best_class, study_inputs, study_selectivity
from test_e2e import harness
from test_probe_pr import stacked_z
from transformers import AutoConfig, AutoModelForCausalLM

from harness.capture.arch import ArchError, arch_of, out_projections
from harness.capture.engine import Engine, Needs

T, N, N_PR, LO, HI, W = 64, 30, 20, 5, 97, 16  # the probe batch; W: sliding windows, shorter than T
TOL = 1e-4

COMMON = dict(vocab_size=97, initializer_range=0.3, bos_token_id=0, eos_token_id=0, pad_token_id=0)
LLAMA_LIKE = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=512, **COMMON)
SWA = ["sliding_attention", "full_attention", "sliding_attention"]
# model_type: (config fields on top of LLAMA_LIKE, the layers whose window is W)
CASES = {
    "llama": (dict(num_key_value_heads=2, head_dim=24), []),  # GQA, head_dim 24 != 64 / 4
    "mistral": (dict(num_key_value_heads=2, sliding_window=W), [0, 1, 2]),
    "qwen2": (dict(num_key_value_heads=1, use_sliding_window=True, sliding_window=W, max_window_layers=1), [1, 2]),
    "qwen3": (dict(num_key_value_heads=2, head_dim=32, use_sliding_window=True, sliding_window=W,
                   max_window_layers=2), [2]),  # QK-norm
    "olmo2": (dict(num_key_value_heads=2), []),  # QK-norm over all heads
    "olmo3": (dict(num_key_value_heads=2, sliding_window=W, layer_types=SWA), [0, 2]),
    "phi3": (dict(num_key_value_heads=2, sliding_window=W, partial_rotary_factor=0.5), [0, 1, 2]),  # fused qkv
    "gemma": (dict(num_key_value_heads=1, head_dim=32), []),
    "gemma2": (dict(num_key_value_heads=2, head_dim=32, sliding_window=W, attn_logit_softcapping=8.0,
                    final_logit_softcapping=1.5, query_pre_attn_scalar=8), [0, 2]),
    "gemma3_text": (dict(num_key_value_heads=2, head_dim=32, sliding_window=W, layer_types=SWA,
                         final_logit_softcapping=1.5, query_pre_attn_scalar=8), [0, 2]),
    # the multimodal wrapper: the language model's config nested under text_config, a tiny vision tower beside it
    "gemma3": (dict(num_key_value_heads=2, head_dim=32, sliding_window=W, layer_types=SWA,
                    final_logit_softcapping=1.5, query_pre_attn_scalar=8), [0, 2]),
    "smollm3": (dict(num_key_value_heads=2, num_hidden_layers=4, use_sliding_window=True, sliding_window=W), []),
    "starcoder2": (dict(num_key_value_heads=2, sliding_window=W), [0, 1, 2]),
    "gpt2": (dict(n_embd=64, n_layer=3, n_head=4, n_positions=512, scale_attn_by_inverse_layer_idx=True), []),
    "falcon": (dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, alibi=True, multi_query=True), []),
}
OWN_LAYOUT = ("gpt2", "falcon")  # not the Llama field names


VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14)


def config(kind: str):
    fields, _ = CASES[kind]
    if kind == "gemma3":
        return AutoConfig.for_model(kind, text_config={**LLAMA_LIKE, **fields}, vision_config=VISION,
                                    mm_tokens_per_image=4, boi_token_index=94, eoi_token_index=95,
                                    image_token_index=96)
    return AutoConfig.for_model(kind, **({**COMMON, **fields} if kind in OWN_LAYOUT else {**LLAMA_LIKE, **fields}))


def tiny(kind: str, seed: int):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config(kind), attn_implementation="eager").eval()
    with torch.no_grad():  # QK-norm bounds the scores: larger norm weights make attention peaked again
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.fill_(2.0)
    return model


def eager_pr(model, ids):
    """(L, H) exp-entropy participation ratio of z at the last position, z from a pre-hook on the out projection."""
    out = []
    for z in stacked_z(model, ids, "last"):  # (N, H, d) per layer
        H = z.shape[1]
        row = []
        for h in range(H):
            s = torch.linalg.svdvals(z[:, h])
            p = s**2 / (s**2).sum()
            p = p[p > 0]
            row.append(torch.exp(-(p * p.log()).sum()).item())
        out.append(row)
    return np.array(out)


def local_overrides(tmp: Path, ckpts: Path, name: str) -> list[str]:
    return ["model=local", f"model.repo={ckpts}", f"model.name={name}", f"model.batch.vocab_lo={LO}",
            f"model.batch.vocab_hi={HI}", f"model.batch.seq_len={T}", "model.bos_id=0", f"data.n={N}",
            "revisions=all", "probe=[selectivity,participation_ratio]", f"probe.pr.n={N_PR}", "runner.device=cpu",
            "runner.progress_bar=false", "runner.dtype=float32", f"paths.root_dir={tmp}", "logger=none"]


@pytest.mark.parametrize("kind", list(CASES))
def test_probed_equal_to_eager(tmp_path, kind):
    models = {f"step{s}": tiny(kind, seed=s) for s in (0, 1)}
    for rev, m in models.items():
        m.save_pretrained(tmp_path / "ckpts" / rev)
    proc = harness(*local_overrides(tmp_path, tmp_path / "ckpts", f"tiny-{kind}"))
    assert proc.returncode == 0, proc.stderr[-3000:]

    inp = study_inputs(N, T, LO, HI)
    worst = 0.0
    for rev, model in models.items():
        heads = pd.read_parquet(tmp_path / "results" / "default" / f"tiny-{kind}" / rev / "heads.parquet")
        heads = heads.sort_values(["layer", "head"])
        rows = last_query_rows(model, inp.ids)  # (N, L, H, T)
        L, H = rows.shape[1:3]
        assert len(heads) == L * H
        sel = study_selectivity(rows, inp)
        for c, want in sel.items():
            got = heads[f"selectivity.{c}"].to_numpy().reshape(L, H)
            np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL, err_msg=f"{kind} {rev} {c}")
            worst = max(worst, float(np.abs(got - want).max()))
        best = heads["selectivity.best_class"].to_numpy().reshape(L, H)
        np.testing.assert_array_equal(best, study_best_class(sel))
        pr = eager_pr(model, inp.ids[:N_PR])
        got = heads["pr.entropy"].to_numpy().reshape(L, H)
        np.testing.assert_allclose(got, pr, rtol=TOL, atol=TOL, err_msg=f"{kind} {rev} pr")
        worst = max(worst, float(np.abs(got - pr).max()))
        # what the comparison is about is switched on: peaked attention, and the window cuts the rows off
        assert rows.max() > 0.5
        for layer in CASES[kind][1]:
            assert rows[:, layer, :, : T - W].abs().max() == 0, (kind, layer)
            assert rows[:, layer, :, T - W:].sum(-1).sub(1).abs().max() < 1e-5
    print(f"{kind}: max |harness - eager| over selectivity and PR = {worst:.2e}")


def test_features_are_on():
    """The tiny configs switch on what they claim, as transformers 5.25 builds the modules."""
    gpt2 = tiny("gpt2", 0)
    assert [a.attn.scaling for a in gpt2.transformer.h] == pytest.approx([16**-0.5 / (i + 1) for i in range(3)])
    assert type(gpt2.transformer.h[0].attn.c_proj).__name__ == "Conv1D"
    assert tiny("smollm3", 0).config.no_rope_layers == [1, 1, 1, 0]  # layer 3 has no rotary
    gemma2 = tiny("gemma2", 0)
    assert gemma2.model.layers[0].self_attn.attn_logit_softcapping == 8.0
    assert tiny("llama", 0).model.layers[0].self_attn.q_proj.out_features == 4 * 24
    assert tiny("falcon", 0).transformer.h[0].self_attention.num_kv_heads == 1


@pytest.mark.parametrize("kind", ["gemma2", "gemma3_text", "gemma3", "llama"])
def test_logits_are_the_models(kind):
    """Engine logits equal the *ForCausalLM's own, final logit softcapping included (gemma2, gemma3_text; the gemma3
    wrapper never applies its text config's cap)."""
    model = tiny(kind, 0)
    ids = torch.randint(LO, HI, (3, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids).logits[:, [-1, 5]]
    cap = Engine(model).run(ids, Needs.of(logits=[-1, 5]))
    got = torch.stack([cap.logits[-1], cap.logits[5]], 1)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    if kind in ("gemma2", "gemma3_text"):  # the cap bites: lm_head's own output goes past it
        with torch.no_grad():
            raw = model.lm_head(model.model(ids).last_hidden_state[:, -1])
        assert want.abs().max() <= 1.5 < raw.abs().max()


@pytest.mark.parametrize("kind, why", [
    ("bloom", "ALiBi: attention is computed inside the module"),
    ("gpt_oss", "learned sink logits (s_aux)"),
    ("gpt_neo", "transformers' attention interface is never called"),
])
def test_refused_with_why(kind, why):
    with pytest.raises(ArchError) as e:
        arch_of(kind)
    msg = str(e.value)
    assert msg.startswith(f"architecture '{kind}' is not supported: ") and why in msg and "\n" not in msg
    assert "(supported: gpt_neox, olmo, olmoe, llama," in msg
    with pytest.raises(ArchError, match=r"^architecture 'nosuch' is not supported \(supported: gpt_neox, "):
        arch_of("nosuch")


@pytest.fixture(scope="module")
def bloom_hub(tmp_path_factory):
    """A hub cache holding org/tiny-bloom: step0 with its weights, step1 with its config.json only."""
    from harness.sources import hubcache

    root = tmp_path_factory.mktemp("bloom")
    cfg = AutoConfig.for_model("bloom", vocab_size=97, hidden_size=64, n_layer=2, n_head=4)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(root / "full")
    (root / "config_only").mkdir()
    (root / "config_only" / "config.json").write_bytes((root / "full" / "config.json").read_bytes())
    hubcache.publish(root / "full", "org/tiny-bloom", "step0", root / "hub")
    hubcache.publish(root / "config_only", "org/tiny-bloom", "step1", root / "hub")
    return root / "hub"


@pytest.mark.parametrize("revision", ["step0", "step1"])
def test_refused_before_any_download(tmp_path, bloom_hub, revision):
    """One line, exit 2, nothing fetched into the cache and nothing written to the results; the hub is "online" at a
    closed port, so anything the harness tried to download would fail with another message."""
    files = lambda: sorted(p for p in bloom_hub.rglob("*"))  # noqa: E731
    before = files()
    proc = harness("model=local", "model.repo=org/tiny-bloom", "model.name=tiny-bloom", f"model.batch.vocab_lo={LO}",
                   f"model.batch.vocab_hi={HI}", f"model.batch.seq_len={T}", f"data.n={N}", "revisions=list",
                   f"revisions.names=[{revision}]", "probe=selectivity", "runner.progress_bar=false",
                   f"paths.root_dir={tmp_path}", "logger=none",
                   env={"HF_HUB_CACHE": str(bloom_hub), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: architecture 'bloom' is not supported: ALiBi: attention is computed inside "
                               "the module, transformers' attention interface is never called (supported: gpt_neox,")
    assert files() == before
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind", ["mistral", "gemma2", "olmo3", "falcon"])
@pytest.mark.parametrize("length", [T, W - 4])  # a window shorter than the sequence, and one longer (no window mask)
def test_padding_with_windows_and_softcap(kind, length):
    """Left padding on top of sliding windows / softcapped scores / ALiBi: the last query's row and z equal eager's."""
    model = tiny(kind, 0)
    ids = torch.randint(LO, HI, (3, length), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :5], mask[2, :1] = 0, 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_attentions=True)
    zs = []
    hooks = [p.register_forward_pre_hook(lambda m, a: zs.append(a[0][:, -1])) for p in out_projections(model)]
    try:
        with torch.no_grad():
            model(ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    cap = Engine(model).run(ids, Needs.of(rows=[-1], z=[-1]), attention_mask=mask)
    want_rows = torch.stack([a[:, :, -1] for a in out.attentions], 1)
    torch.testing.assert_close(cap.rows[-1], want_rows, rtol=0, atol=TOL)
    torch.testing.assert_close(cap.z[-1].flatten(2), torch.stack(zs, 1), rtol=0, atol=TOL)
    assert want_rows[0, ..., :5].abs().max() == 0  # padding gets nothing


@pytest.mark.parametrize("override, message", [
    ("model.batch.vocab_hi=500", "does not fit tiny-gemma3 (vocab size 97)"),
    ("model.batch.seq_len=600", "longer than tiny-gemma3's context (max_position_embeddings=512)"),
])
def test_wrapper_checked_from_its_text_config(tmp_path, override, message):
    """The wrapper's vocabulary and context, nested under text_config in config.json, are checked before loading."""
    tiny("gemma3", 0).save_pretrained(tmp_path / "ckpts" / "step0")
    proc = harness(*local_overrides(tmp_path, tmp_path / "ckpts", "tiny-gemma3"), override)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()
