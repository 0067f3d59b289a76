"""Zero-ablation equals a plain forward with a pre-hook that zeroes the heads' slices of the output-projection input;
the matched-random head sets are matched to the circuit (same count per layer), disjoint from it and from each other."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from reference import last_query_rows, study_inputs, study_selectivity

from harness.capture.arch import head_layout
from harness.capture.batches import induction_batch
from harness.run import loop
from probes.ablation import Ablation
from probes.base import Context

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)


def o_proj(model, layer: int) -> torch.nn.Linear:
    """The attention output projection of `layer`, spelled out from the transformers model classes
    (GPTNeoXForCausalLM.gpt_neox.layers[i].attention.dense, Olmo/OlmoeForCausalLM.model.layers[i].self_attn.o_proj)."""
    if model.config.model_type == "gpt_neox":
        return model.gpt_neox.layers[layer].attention.dense
    return model.model.layers[layer].self_attn.o_proj


def metrics(model, ids: torch.Tensor, b_pos: np.ndarray, heads: dict):
    """Top-1, top-5 and mean logit of B (the token at b_pos) at the last position with `heads` ({layer: [h]}) zeroed
    by a plain forward pre-hook on the output projection."""
    d = model.config.hidden_size // model.config.num_attention_heads

    def zero(hs):
        def hook(module, args):
            x = args[0].clone()
            for h in hs:
                x[..., h * d:(h + 1) * d] = 0
            return (x,)
        return hook

    hooks = [o_proj(model, layer).register_forward_pre_hook(zero(hs)) for layer, hs in heads.items()]
    try:
        with torch.no_grad():
            logits = model(ids).logits[:, -1].double()
    finally:
        for h in hooks:
            h.remove()
    n = len(ids)
    target = ids[torch.arange(n), torch.as_tensor(b_pos)]
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


def run_ablation(model, batch, probe):
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    return loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch([probe], batch, ctx),
                               model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["ablation"]


def circuit_threshold(sel: np.ndarray, k: int) -> float:
    """A threshold that selects the top-k heads, halfway to the next one (away from any head)."""
    top = np.sort(sel.ravel())[::-1]
    return float((top[k - 1] + top[k]) / 2)


def test_ablation_matches_hooks(arch):
    model = tiny_model(arch)
    batch = induction_batch(n=30, seq_len=64, vocab_lo=5, vocab_hi=97)
    inp = study_inputs(30, 64, 5, 97)  # the same rows, rebuilt from docs/method.md; B sits at ab+1
    torch.testing.assert_close(batch.input_ids, inp.ids)
    ids, b_pos = inp.ids, inp.ab + 1
    sel = study_selectivity(last_query_rows(model, ids), inp)["induction"]  # eager, valid rows
    thr = circuit_threshold(sel, 3)  # a 3-head circuit
    res = run_ablation(model, batch, Ablation(per_head=True, induction=thr, n_random=3))

    circuit = sel >= thr
    assert circuit.sum() == 3
    np.testing.assert_array_equal(res.heads["circuit"], circuit)
    clean = metrics(model, ids, b_pos, {})
    for m in ("top1", "top5", "logit"):
        assert res.scalars[f"clean_{m}"] == pytest.approx(clean[m], rel=1e-5, abs=1e-6)
    L, H = circuit.shape
    for layer in range(L):
        for h in range(H):
            abl = metrics(model, ids, b_pos, {layer: [h]})
            for m in ("top1", "top5", "logit"):
                assert res.heads[f"delta_{m}"][layer, h] == pytest.approx(abl[m] - clean[m], rel=1e-4, abs=1e-5)
    # ablating the strongest induction head moves B's logit: the deltas compared above are not all zero
    top = np.unravel_index(np.argmax(sel), sel.shape)
    assert abs(res.heads["delta_logit"][top]) > 1e-3
    got = metrics(model, ids, b_pos, as_heads(res.info["circuit"]))
    rnd = [metrics(model, ids, b_pos, as_heads(res.info[f"random{s}"])) for s in range(3)]
    for m in ("top1", "top5", "logit"):
        assert res.scalars[f"circuit_{m}"] == pytest.approx(got[m], rel=1e-5, abs=1e-6)
        assert res.scalars[f"random_{m}_mean"] == pytest.approx(np.mean([r[m] for r in rnd]), rel=1e-5, abs=1e-6)
        assert res.scalars[f"random_{m}_std"] == pytest.approx(np.std([r[m] for r in rnd]), rel=1e-5, abs=1e-6)
    for s in range(3):  # matched: the same count per layer, disjoint from the circuit
        mask = as_mask(res.info[f"random{s}"], circuit.shape)
        np.testing.assert_array_equal(mask.sum(1), circuit.sum(1))
        assert not (mask & circuit).any()


def as_mask(names, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for layer, hs in as_heads(names).items():
        mask[layer, hs] = True
    return mask


def test_random_sets_are_matched_and_distinct(arch):
    """16 heads per layer, a 3-head circuit: every matched-random set (as the probe records it) has the circuit's
    count in every layer, shares no head with the circuit, and no two sets are the same heads (a generator
    re-seeded per set, or one draw reused, would repeat a set; with >= 13 candidates per layer a repeat among
    five independent draws is unlikely, and the seed is fixed). One set's ablation is recomputed with hooks."""
    model = tiny_model(arch, heads=16, d_model=128)
    batch = induction_batch(n=14, seq_len=64, vocab_lo=5, vocab_hi=97)
    inp = study_inputs(14, 64, 5, 97)
    torch.testing.assert_close(batch.input_ids, inp.ids)
    sel = study_selectivity(last_query_rows(model, inp.ids), inp)["induction"]
    thr = circuit_threshold(sel, 3)
    res = run_ablation(model, batch, Ablation(per_head=False, induction=thr, n_random=5))
    circuit = sel >= thr
    assert circuit.sum() == 3 and circuit.shape == (2, 16)
    np.testing.assert_array_equal(res.heads["circuit"], circuit)
    assert sorted(res.info) == ["circuit", *(f"random{s}" for s in range(5))]
    assert as_heads(res.info["circuit"]) == as_heads([f"L{i}H{h}" for i, h in zip(*np.nonzero(circuit))])
    masks = [as_mask(res.info[f"random{s}"], circuit.shape) for s in range(5)]
    for mask in masks:
        np.testing.assert_array_equal(mask.sum(1), circuit.sum(1))
        assert not (mask & circuit).any()
    sets = [frozenset(res.info[f"random{s}"]) for s in range(5)]
    assert len(set(sets)) == 5, sets
    assert len(frozenset().union(*sets)) > 3  # the draws spread over the layer's other heads
    # the matched-random mean is the mean of the five sets' metrics, each recomputed with plain hooks
    rnd = [metrics(model, inp.ids, inp.ab + 1, as_heads(res.info[f"random{s}"])) for s in range(5)]
    assert res.scalars["random_logit_mean"] == pytest.approx(np.mean([r["logit"] for r in rnd]), rel=1e-5, abs=1e-6)
    assert res.scalars["random_top1_mean"] == pytest.approx(np.mean([r["top1"] for r in rnd]), abs=1e-9)


def test_no_circuit_no_extra_passes():
    model = tiny_model("gpt_neox")
    batch = induction_batch(n=10, seq_len=64, vocab_lo=5, vocab_hi=97)
    probe = Ablation(per_head=False)  # 50x: no head of a random tiny model
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    res = loop.run_checkpoint(model, loop.group_by_batch([probe], batch, ctx),
                              model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["ablation"]
    assert res.scalars["n_circuit"] == 0 and np.isnan(res.scalars["circuit_top1"])
    assert np.isnan(res.heads["delta_top1"]).all()
