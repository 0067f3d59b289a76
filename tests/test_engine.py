"""Every statistic the capture engine serves equals eager attention + plain forward hooks (fp32, 1e-5)."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_model

from harness.capture.arch import out_projections
from harness.capture.engine import Engine, Needs, Reduction


def eager_reference(model, ids):
    """Full (B, L, H, T, T) maps from output_attentions=True and z from pre-hooks on the output projection."""
    zs = []
    hooks = [p.register_forward_pre_hook(lambda m, a: zs.append(a[0])) for p in out_projections(model)]
    try:
        with torch.no_grad():
            out = model(ids, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    B, T = ids.shape
    H = model.config.num_attention_heads
    z = torch.stack([x.view(B, T, H, -1) for x in zs], 1)  # (B, L, T, H, d)
    return torch.stack(out.attentions, 1), z, out.logits


def close(a, b):
    """1e-5 relative to the quantity's scale: the engine's layer outputs come from SDPA, the reference's
    from eager attention, and their fp32 rounding differs by ~1e-6 relative."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_engine_matches_eager(arch):
    model = tiny_model(arch)
    ids = torch.randint(1, 97, (5, 48))
    ids[:, 0] = 0  # a real BOS token at position 0
    A, z, logits = eager_reference(model, ids)
    T = ids.shape[1]
    reds = [Reduction("diag", 1, 1), Reduction("diag", 23, 24), Reduction("col", 0, 1),
            Reduction("entropy", 0, 1), Reduction("diag", 0, -10, -2)]
    eng = Engine(copy.deepcopy(model))
    cap = eng.run(ids, Needs.of(rows=[-1, 10], reductions=reds, z=[-1, 3], logits=[-1]))
    close(cap.rows[-1], A[..., -1, :])
    close(cap.rows[10], A[..., 10, :])
    for r in reds:
        lo, hi = r.lo % T if r.lo < 0 else r.lo, (r.hi % T if r.hi is not None and r.hi < 0 else (r.hi or T))
        qs = range(lo, hi)
        if r.kind == "diag":
            want = torch.stack([A[..., i, i - r.arg] for i in qs if i >= r.arg], -1).mean(-1)
        elif r.kind == "col":
            want = torch.stack([A[..., i, r.arg] for i in qs if i >= r.arg], -1).mean(-1)
        else:
            want = torch.stack([-(A[..., i, :] * A[..., i, :].clamp_min(1e-30).log()).sum(-1) for i in qs], -1).mean(-1)
        close(cap.reductions[r], want)
    close(cap.z[-1], z[:, :, -1])
    close(cap.z[3], z[:, :, 3])
    close(cap.logits[-1], logits[:, -1])


def test_engine_chunked_reductions_and_ablation(arch, monkeypatch):
    """Tiny chunks give the same reductions; ablating a head zeroes its z and changes the logits."""
    import harness.capture.engine as engine_mod

    model = tiny_model(arch, attn="sdpa")
    eng = Engine(model)
    ids = torch.randint(1, 97, (3, 40))
    needs = Needs.of(reductions=[Reduction("diag", 1, 1), Reduction("entropy", 0, 1)], z=[-1], logits=[-1])
    full = eng.run(ids, needs)
    monkeypatch.setattr(engine_mod, "CHUNK_BYTES", 1)  # one query per chunk
    chunked = eng.run(ids, needs)
    for r in full.reductions:
        close(chunked.reductions[r], full.reductions[r])
    ablated = eng.run(ids, needs, ablate={1: [2]})
    assert ablated.z[-1][:, 1, 2].abs().max() == 0
    close(ablated.z[-1][:, 0], full.z[-1][:, 0])  # earlier layers untouched
    assert (ablated.logits[-1] - full.logits[-1]).abs().max() > 1e-4


def gqa_model(arch: str, kv_heads: int = 2, seed: int = 0):
    """A tiny OLMo/OLMoE with grouped-query attention (4 query heads share `kv_heads` k/v heads), eager."""
    from conftest import tiny_config
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch)
    cfg.num_key_value_heads = kv_heads
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def padded_batch(side: str, B: int = 4, T: int = 40, seed: int = 0):
    """(ids, mask): random tokens, row b with 0, 3, 7, 12 padding positions on `side` (mask 0 there)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, n_pad in enumerate((0, 3, 7, 12)[:B]):
        if n_pad:
            pad = slice(0, n_pad) if side == "left" else slice(T - n_pad, T)
            mask[b, pad] = 0
            ids[b, pad] = 0
    return ids, mask


def reference_reduction(A, real, r: Reduction):
    """(B, L, H): the reduction over each row's real queries in [lo, hi) whose target key is a real token at or
    before the query (diag: key i - arg; col: key arg; entropy: every real query), from full eager maps."""
    B, T = real.shape
    lo = r.lo + T if r.lo < 0 else r.lo
    hi = T if r.hi is None else (r.hi + T if r.hi < 0 else r.hi)
    out = []
    for b in range(B):
        vals = []
        for i in range(lo, hi):
            if not real[b, i]:
                continue
            if r.kind == "entropy":
                p = A[b, :, :, i].double()
                vals.append(-(p * p.clamp_min(1e-300).log()).sum(-1))
                continue
            key = i - r.arg if r.kind == "diag" else r.arg
            if 0 <= key <= i and real[b, key]:
                vals.append(A[b, :, :, i, key].double())
        assert vals, (b, r)  # the batch is built so that every row has some
        out.append(torch.stack(vals).mean(0))
    return torch.stack(out).float()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["olmo", "olmoe"])
def test_engine_matches_eager_gqa_with_padding(arch, side):
    """Grouped-query attention (2 k/v heads for 4 query heads) and a padded batch: every statistic the engine
    serves equals eager attention (output_attentions=True, same attention_mask) on the real positions."""
    model = gqa_model(arch)
    assert model.config.num_key_value_heads == 2 < model.config.num_attention_heads == 4
    att = model.model.layers[0].self_attn
    assert att.k_proj.out_features == att.v_proj.out_features == 2 * 16 < att.q_proj.out_features == 4 * 16
    ids, mask = padded_batch(side)
    B, T = ids.shape
    real = mask.bool()
    zs = []
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: zs.append(a[0]))
             for layer in model.model.layers]
    try:
        with torch.no_grad():
            out = model(ids, attention_mask=mask, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    A = torch.stack(out.attentions, 1)  # (B, L, H, T, T)
    z = torch.stack([x.view(B, T, 4, -1) for x in zs], 1)  # (B, L, T, H, d)

    reds = [Reduction("diag", 1, 1), Reduction("diag", 2, 0), Reduction("col", 20, 20), Reduction("col", 0, 1),
            Reduction("entropy", 0, 1), Reduction("entropy", 0, 14, 30), Reduction("diag", 0, -16, -2)]
    if side == "left":  # position 0 is padding in three rows: no first-token column there
        reds.remove(Reduction("col", 0, 1))
    rows, zpos = [-1, 13, 25], [-1, 13, 25]
    if side == "right":  # the last position is padding in three rows: read the rows' real ends too
        rows, zpos = [10, 26, 30], [10, 26, 30]
    eng = Engine(copy.deepcopy(model))
    cap = eng.run(ids, Needs.of(rows=rows, reductions=reds, z=zpos, logits=zpos), attention_mask=mask)
    assert cap.finite
    for p in rows:
        q = p % T
        keep = real[:, q]  # rows where query p is a real token
        assert keep.sum() >= 2
        got, want = cap.rows[p][keep], A[keep][..., q, :]
        close(got, want)
        for g, r in zip(got, real[keep]):
            assert (g[..., ~r] == 0).all()  # no attention to padding keys
    for r in reds:
        want = reference_reduction(A, real, r)
        close(cap.reductions[r], want)
    for p in zpos:
        keep = real[:, p % T]
        close(cap.z[p][keep], z[keep][:, :, p % T])
        close(cap.logits[p][keep], out.logits[keep][:, p % T])
