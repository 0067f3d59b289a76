"""Zero-ablation equals a plain forward with a pre-hook that zeroes the heads' slices of the output-projection input."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from reference import last_query_rows, study_inputs, study_selectivity

from harness.capture.arch import head_layout, out_projections
from harness.capture.batches import induction_batch
from harness.run import loop
from probes.ablation import Ablation
from probes.base import Context

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)


def metrics(model, batch, heads: dict):
    """Top-1, top-5 and mean logit of B at the last position with `heads` ({layer: [h]}) zeroed."""
    d = model.config.hidden_size // model.config.num_attention_heads

    def zero(hs):
        def hook(module, args):
            x = args[0].clone()
            for h in hs:
                x[..., h * d:(h + 1) * d] = 0
            return (x,)
        return hook

    hooks = [out_projections(model)[layer].register_forward_pre_hook(zero(hs)) for layer, hs in heads.items()]
    try:
        with torch.no_grad():
            logits = model(batch.input_ids).logits[:, -1].double()
    finally:
        for h in hooks:
            h.remove()
    n = len(batch)
    target = batch.input_ids[torch.arange(n), torch.as_tensor(batch.positions["induction"])]
    order = logits.argsort(-1, descending=True)
    return {"top1": np.mean([order[i, 0] == target[i] for i in range(n)]),
            "top5": np.mean([target[i] in order[i, :5] for i in range(n)]),
            "logit": np.mean([logits[i, target[i]].item() for i in range(n)])}


def as_heads(names):
    out = {}
    for s in names:  # "L1H3"
        layer, h = map(int, s[1:].split("H"))
        out.setdefault(layer, []).append(h)
    return out


def test_ablation_matches_hooks(arch):
    model = tiny_model(arch)
    batch = induction_batch(n=30, seq_len=64, vocab_lo=5, vocab_hi=97)
    inp = study_inputs(30, 64, 5, 97)
    sel = study_selectivity(last_query_rows(model, inp.ids), inp)["induction"]  # eager, valid rows
    thr = float(np.sort(sel.ravel())[-4:-2].mean())  # a 3-head circuit, the threshold away from any head
    probe = Ablation(per_head=True, induction=thr, n_random=3)
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    res = loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch([probe], batch, ctx),
                              model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["ablation"]

    circuit = sel >= thr
    np.testing.assert_array_equal(res.heads["circuit"], circuit)
    clean = metrics(model, batch, {})
    for m in ("top1", "top5", "logit"):
        assert res.scalars[f"clean_{m}"] == pytest.approx(clean[m], rel=1e-5, abs=1e-6)
    L, H = circuit.shape
    for layer in range(L):
        for h in range(H):
            abl = metrics(model, batch, {layer: [h]})
            for m in ("top1", "top5", "logit"):
                assert res.heads[f"delta_{m}"][layer, h] == pytest.approx(abl[m] - clean[m], rel=1e-4, abs=1e-5)
    got = metrics(model, batch, as_heads(res.info["circuit"]))
    rnd = [metrics(model, batch, as_heads(res.info[f"random{s}"])) for s in range(3)]
    for m in ("top1", "top5", "logit"):
        assert res.scalars[f"circuit_{m}"] == pytest.approx(got[m], rel=1e-5, abs=1e-6)
        assert res.scalars[f"random_{m}_mean"] == pytest.approx(np.mean([r[m] for r in rnd]), rel=1e-5, abs=1e-6)
    for s in range(3):  # matched: the same count per layer, disjoint from the circuit
        mask = np.zeros_like(circuit)
        for layer, hs in as_heads(res.info[f"random{s}"]).items():
            mask[layer, hs] = True
        np.testing.assert_array_equal(mask.sum(1), circuit.sum(1))
        assert not (mask & circuit).any()


def test_no_circuit_no_extra_passes():
    model = tiny_model("gpt_neox")
    batch = induction_batch(n=10, seq_len=64, vocab_lo=5, vocab_hi=97)
    probe = Ablation(per_head=False)  # 50x: no head of a random tiny model
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    res = loop.run_checkpoint(model, loop.group_by_batch([probe], batch, ctx),
                              model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["ablation"]
    assert res.scalars["n_circuit"] == 0 and np.isnan(res.scalars["circuit_top1"])
    assert np.isnan(res.heads["delta_top1"]).all()
