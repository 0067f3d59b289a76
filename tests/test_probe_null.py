"""Null calibration equals the selectivity formula at random targets, computed by hand from eager attention
under the screen's conventions (same batch, same baseline, valid rows; inputs rebuilt in tests/reference.py)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from reference import study_baseline, study_batch, study_inputs, study_valid

from harness.capture.arch import head_layout
from harness.capture.batches import induction_batch
from harness.run import loop
from probes.base import Context
from probes.null_calibration import NullCalibration, null_targets

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)


def spec_null_targets(ab: np.ndarray, T: int, draws: int, seed: int, shift: int) -> np.ndarray:
    """(draws, N) null targets written from docs/method.md section 3 and null_calibration.py's documented draw,
    one scalar draw at a time: RandomState(seed); a target is uniform over [1, T-1) (T the full length, BOS
    included), draw-major (all N examples of draw 0, then draw 1, ...); an example's special positions are the
    first token 0, its duplicate ab and induction ab+1 (shifted by the BOS) and T-6..T-1; rejected entries are
    redrawn in rounds, in the same draw-major order, until none is special."""
    rng = np.random.RandomState(seed)
    N = len(ab)
    special = [{0, a + shift, a + shift + 1, *range(T - 6, T)} for a in ab]
    t = np.array([[rng.randint(1, T - 1) for _ in range(N)] for _ in range(draws)])
    while True:
        bad = [(d, n) for d in range(draws) for n in range(N) if t[d, n] in special[n]]
        if not bad:
            return t
        for d, n in bad:
            t[d, n] = rng.randint(1, T - 1)


@pytest.mark.parametrize("bos, seed", [(False, 0), (True, 0), (True, 7)])
def test_targets_are_random_non_special(bos, seed):
    batch = induction_batch(n=40, seq_len=64, vocab_lo=5, vocab_hi=97, prepend_bos=bos, bos_id=0)
    _, _, ab = study_batch(40, 64, 5, 97)
    T = 64 + int(bos)
    want = spec_null_targets(ab, T, 300, seed, int(bos))
    t = null_targets(batch, 300, seed=seed)
    np.testing.assert_array_equal(t, want)
    for i in range(len(batch)):  # the properties, once more, from the spec's words
        a = ab[i] + int(bos)
        special = {0, a, a + 1, T - 1, T - 2, T - 3, T - 4, T - 5, T - 6}
        assert not special & set(t[:, i].tolist())
        assert t[:, i].min() >= 1 and t[:, i].max() <= T - 2
    assert len(np.unique(t)) > T // 2  # spread over the sequence
    assert (t != spec_null_targets(ab, T, 300, seed + 1, int(bos))).mean() > 0.9  # the seed matters


@pytest.mark.parametrize("bos", [False, True])
def test_null_matches_eager(arch, bos):
    model = tiny_model(arch)
    n, lo, hi = 60, 5, 65  # a small vocabulary: some rows are invalid
    batch = induction_batch(n=n, seq_len=64, vocab_lo=lo, vocab_hi=hi, prepend_bos=bos, bos_id=0)
    ids, b, ab = study_batch(n, 64, lo, hi)
    valid = study_valid(ids, b)
    assert 0 < valid.sum() < n
    baseline = np.array(study_baseline(64)) + int(bos)
    draws = 40
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    res = loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch([NullCalibration(draws=draws)], batch, ctx),
                              model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["null"]

    ref_ids = study_inputs(n, 64, lo, hi, bos_id=0 if bos else None).ids  # the same rows, rebuilt from the spec
    torch.testing.assert_close(batch.input_ids, ref_ids)
    with torch.no_grad():
        att = model(ref_ids, output_attentions=True).attentions
    N, T = ref_ids.shape
    L, H = len(att), att[0].shape[1]
    t = spec_null_targets(ab, T, draws, seed=0, shift=int(bos))  # the draw from the spec, not the probe's
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
