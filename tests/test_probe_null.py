"""Null calibration equals the selectivity formula at random targets, computed by hand from eager attention
under the screen's conventions (same batch, same baseline, valid rows; inputs rebuilt in tests/reference.py)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from reference import study_baseline, study_batch, study_valid

from harness.capture.arch import head_layout
from harness.capture.batches import induction_batch
from harness.run import loop
from probes.base import Context
from probes.null_calibration import NullCalibration, null_targets

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)


def test_targets_are_random_non_special():
    batch = induction_batch(n=40, seq_len=64, vocab_lo=5, vocab_hi=97, prepend_bos=True, bos_id=0)
    _, _, ab = study_batch(40, 64, 5, 97)
    t = null_targets(batch, 300, seed=0)
    np.testing.assert_array_equal(t, null_targets(batch, 300, seed=0))  # seeded
    T = batch.seq_len
    for i in range(len(batch)):
        a = ab[i] + 1  # BOS shift
        special = {0, a, a + 1, T - 1, T - 2, T - 3, T - 4, T - 5, T - 6}
        assert not special & set(t[:, i].tolist())
        assert t[:, i].min() >= 1 and t[:, i].max() <= T - 2
    assert len(np.unique(t)) > T // 2  # spread over the sequence


@pytest.mark.parametrize("bos", [False, True])
def test_null_matches_eager(arch, bos):
    model = tiny_model(arch)
    n, lo, hi = 60, 5, 65  # a small vocabulary: some rows are invalid
    batch = induction_batch(n=n, seq_len=64, vocab_lo=lo, vocab_hi=hi, prepend_bos=bos, bos_id=0)
    ids, b, _ = study_batch(n, 64, lo, hi)
    valid = study_valid(ids, b)
    assert 0 < valid.sum() < n
    baseline = np.array(study_baseline(64)) + int(bos)
    draws = 40
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    res = loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch([NullCalibration(draws=draws)], batch, ctx),
                              model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["null"]

    with torch.no_grad():
        att = model(batch.input_ids, output_attentions=True).attentions
    N, T = batch.input_ids.shape
    L, H = len(att), att[0].shape[1]
    t = null_targets(batch, draws, seed=0)
    null = np.zeros((draws, L, H))
    for layer in range(L):
        for h in range(H):
            rows = att[layer][:, h, T - 1].double().numpy()  # (N, T)
            base = np.mean([rows[n, baseline].mean() for n in range(N)])  # all rows
            for d in range(draws):
                on_valid = [rows[n, t[d, n]] for n in range(N) if valid[n]]  # like ab+1: valid rows only
                null[d, layer, h] = np.mean(on_valid) / max(base, 1e-8)
    np.testing.assert_allclose(res.heads["p99"], np.percentile(null, 99, axis=0), rtol=1e-5)
    np.testing.assert_allclose(res.heads["max"], null.max(0), rtol=1e-5)
    assert res.scalars["p99"] == pytest.approx(np.percentile(null, 99), rel=1e-5)
    assert res.scalars["max"] == pytest.approx(null.max(), rel=1e-5)
    assert res.scalars["t_recall"] == pytest.approx(max(2.0, np.percentile(null, 99)), rel=1e-5)
    assert res.scalars["t_precision"] == 50.0
