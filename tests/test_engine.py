"""Every statistic the capture engine serves equals eager attention + plain forward hooks (fp32, 1e-5)."""
from __future__ import annotations

import copy

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
