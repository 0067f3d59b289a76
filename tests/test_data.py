"""The probe batch equals the study's draws (docs/method.md section 2), rebuilt independently in tests/reference.py."""
from __future__ import annotations

import numpy as np
import pytest
from reference import study_baseline, study_batch, study_valid

from harness.capture.batches import DataError, baseline_positions, induction_batch


def test_study_batch_t256_bit_for_bit():
    ids, b, ab = study_batch(2000, 256, 100, 10000, seed=42)
    batch = induction_batch(n=2000, seq_len=256, vocab_lo=100, vocab_hi=10000, seed=42)
    np.testing.assert_array_equal(batch.input_ids.numpy(), ids)
    np.testing.assert_array_equal(batch.input_ids[1587].numpy(), ids[1587])  # the row the old sampler got wrong
    np.testing.assert_array_equal(batch.positions["duplicate"], ab)
    np.testing.assert_array_equal(batch.positions["induction"], ab + 1)
    np.testing.assert_array_equal(batch.positions["query"], np.full(2000, 255))
    np.testing.assert_array_equal(batch.valid, study_valid(ids, b))


def test_small_vocabulary_collides_and_marks_invalid_rows():
    ids, b, ab = study_batch(600, 128, 5, 65, seed=42)
    batch = induction_batch(n=600, seq_len=128, vocab_lo=5, vocab_hi=65, seed=42)
    np.testing.assert_array_equal(batch.input_ids.numpy(), ids)
    valid = study_valid(ids, b)
    np.testing.assert_array_equal(batch.valid, valid)
    assert 0 < (~valid).sum() < 600, "a 60-token vocabulary re-creates B in some rows, not all"
    assert batch.meta["n_valid"] == valid.sum()
    # In a valid row the only B before T-1 is the planted one, so the study's recovered ab is the drawn ab.
    for row, bb, a in zip(ids[valid], b[valid], ab[valid]):
        assert np.flatnonzero(row[:-1] == bb).tolist() == [a + 1]


@pytest.mark.parametrize("T", [64, 128, 256, 512])
def test_baseline_positions_in_the_study_draw_order(T):
    assert baseline_positions(T).tolist() == study_baseline(T)


def test_prepend_bos_shifts_the_same_batch():
    plain = induction_batch(n=50, seq_len=128, vocab_lo=5, vocab_hi=65)
    bos = induction_batch(n=50, seq_len=128, vocab_lo=5, vocab_hi=65, prepend_bos=True, bos_id=0)
    np.testing.assert_array_equal(bos.input_ids[:, 1:], plain.input_ids)
    assert (bos.input_ids[:, 0] == 0).all()
    for k in ("query", "induction", "duplicate"):
        np.testing.assert_array_equal(bos.positions[k], plain.positions[k] + 1)
    np.testing.assert_array_equal(bos.fixed["baseline"], plain.fixed["baseline"] + 1)
    np.testing.assert_array_equal(bos.valid, plain.valid)


@pytest.mark.parametrize("kw, msg", [
    (dict(seq_len=56), "seq_len=56"),
    (dict(n=0), "data.n=0"),
    (dict(prepend_bos=True), "bos_id"),
])
def test_batch_that_cannot_be_built(kw, msg):
    with pytest.raises(DataError, match=msg):
        induction_batch(**{**dict(n=4, seq_len=64, vocab_lo=5, vocab_hi=65), **kw})
