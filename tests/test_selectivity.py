"""The selectivity screen equals the study's rules applied by explicit loops to eager attention maps.

Every input of the golden values (tokens, ab, valid rows, baseline positions) is rebuilt from docs/method.md
section 2 in tests/reference.py, not taken from the harness's batch.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from handwired import handwired_model
from reference import TIE_ORDER, StudyInputs, study_best_class, study_inputs

from harness.capture.arch import head_layout
from harness.capture.batches import ProbeBatch, induction_batch
from harness.run import loop
from probes.base import Context
from probes.selectivity import Selectivity, best_class

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)  # 7 does not divide n


def by_hand(model, inp: StudyInputs):
    """Explicit loops over examples, layers and heads of eager output_attentions=True (docs/method.md section 3)."""
    with torch.no_grad():
        att = model.base_model(inp.ids, output_attentions=True).attentions  # no 10k-wide logits
    N, T = inp.ids.shape
    L, H = len(att), att[0].shape[1]
    sums = {c: np.zeros((L, H)) for c in TIE_ORDER + ("base",)}
    valid = inp.valid
    n_valid = int(valid.sum())
    for n in range(N):
        a = inp.ab[n]
        for layer in range(L):
            for h in range(H):
                row = att[layer][n, h, T - 1].double().numpy()
                if valid[n]:
                    sums["induction"][layer, h] += row[a + 1] / n_valid
                    sums["duplicate"][layer, h] += row[a] / n_valid
                sums["previous_token"][layer, h] += row[T - 2] / N
                sums["self"][layer, h] += row[T - 1] / N
                sums["first_token"][layer, h] += row[0] / N
                sums["local"][layer, h] += np.mean([row[T - k] for k in (3, 4, 5, 6)]) / N
                sums["base"][layer, h] += np.mean([row[p] for p in inp.baseline]) / N
    return {c: v / np.maximum(sums["base"], 1e-8) for c, v in sums.items() if c != "base"}


def run_probe(model, batch, **thresholds):
    probe = Selectivity(**thresholds)
    ctx = Context(head_layout(model.config), batch, {"name": "m"})
    return loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch([probe], batch, ctx),
                               model_cfg={"name": "m"}, revision="r", runner=RUNNER)["selectivity"]


def check(res, want, assign=30.0, bos=30.0, n_valid=None):
    for c, v in want.items():
        np.testing.assert_allclose(res.heads[c], v, rtol=1e-5, atol=0)
    best = study_best_class(want, assign)
    np.testing.assert_array_equal(res.heads["best_class"], best)
    np.testing.assert_array_equal(res.heads["bos"], want["first_token"] >= bos)
    np.testing.assert_array_equal(res.heads["bos_best"], best == "first_token")
    assert res.scalars["bos_fraction"] == pytest.approx((want["first_token"] >= bos).mean())
    assert res.scalars["bos_best_fraction"] == pytest.approx((best == "first_token").mean())
    if n_valid is not None:
        assert res.scalars["n_valid"] == n_valid


@pytest.mark.parametrize("arch", ["gpt_neox", "olmo"])
@pytest.mark.parametrize("T, lo, hi, bos", [(256, 100, 10000, False), (128, 5, 65, False), (128, 5, 65, True)])
def test_handwired_heads_match_explicit_loops(arch, T, lo, hi, bos):
    n = 120
    inp = study_inputs(n, T, lo, hi, bos_id=0 if bos else None)
    model = handwired_model(arch, T, hi, bos=bos, d_model=128)
    want = by_hand(model, inp)
    batch = induction_batch(n=n, seq_len=T, vocab_lo=lo, vocab_hi=hi, prepend_bos=bos, bos_id=0)
    res = run_probe(model, batch)
    check(res, want, n_valid=int(inp.valid.sum()))
    # The hand-set heads make the classes far from 1x, so the comparison has something to see.
    assert want["induction"].max() >= 30 and want["previous_token"].max() >= 30 and want["first_token"].max() >= 30
    if T == 256:
        assert (res.heads["bos"] & ~res.heads["bos_best"]).any(), "a head with first-token >= 30x but another best"
        assert res.heads["bos_best"].any() and res.heads["induction_circuit"].any()


@pytest.mark.parametrize("bos", [False, True])
def test_random_tiny_models_match_explicit_loops(arch, bos):
    n, T, lo, hi = 30, 64, 5, 97
    model = tiny_model(arch)
    want = by_hand(model, study_inputs(n, T, lo, hi, bos_id=0 if bos else None))
    batch = induction_batch(n=n, seq_len=T, vocab_lo=lo, vocab_hi=hi, prepend_bos=bos, bos_id=0)
    check(run_probe(model, batch, assign=1.0, bos=1.0), want, assign=1.0, bos=1.0)  # low thresholds: exercise them


def test_invalid_row_is_left_out_of_induction_and_duplicate_only():
    n, T, lo, hi = 40, 256, 100, 10000
    inp = study_inputs(n, T, lo, hi)
    assert inp.valid.all()
    b3 = inp.ids[3, inp.ab[3] + 1].item()
    inp.ids[3, 7] = b3  # B twice before the query: the study cannot recover ab for row 3
    assert (inp.ids[3, :-1] == b3).sum() == 2
    inp.valid[3] = False
    model = handwired_model("gpt_neox", T, hi, d_model=128)
    want = by_hand(model, inp)
    all_rows = by_hand(model, StudyInputs(inp.ids, inp.ab, np.ones(n, dtype=bool), inp.baseline))
    built = induction_batch(n=n, seq_len=T, vocab_lo=lo, vocab_hi=hi)
    batch = ProbeBatch(inp.ids.clone(), built.positions, built.fixed, valid=built.valid.copy(), meta=built.meta)
    batch.valid[3] = False
    res = run_probe(model, batch)
    check(res, want, n_valid=n - 1)
    assert not np.allclose(want["induction"], all_rows["induction"], rtol=1e-3)  # row 3 matters for induction
    for c in ("previous_token", "self", "first_token", "local"):
        np.testing.assert_array_equal(want[c], all_rows[c])


def test_best_class_tie_order():
    rng = np.random.RandomState(0)
    sel = {c: rng.choice([0.0, 29.9, 30.0, 31.0, 60.0], size=(40, 25)) for c in TIE_ORDER}  # many exact ties
    np.testing.assert_array_equal(best_class(sel, 30.0), study_best_class(sel, 30.0))
    ties = {c: np.full((1, 1), 40.0) for c in TIE_ORDER}
    for c in TIE_ORDER:  # each class wins a tie against every class after it
        assert best_class(ties, 30.0)[0, 0] == c
        ties[c][:] = 39.0
    assert best_class({c: np.full((1, 1), 29.0) for c in TIE_ORDER}, 30.0)[0, 0] == "none"
