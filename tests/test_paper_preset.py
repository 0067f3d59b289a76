"""`python -m harness experiment=paper model=local model.repo=<folder>` gives the study's numbers per head and class.

The checkpoints are hand-wired (tests/handwired.py: previous-token, self, local, first-token, induction,
duplicate and mixed heads), so every class is far from 1x; the golden values come from eager attention on the
batch rebuilt from docs/method.md section 2 (tests/reference.py), not from the harness.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from handwired import handwired_model
from reference import last_query_rows, study_best_class, study_inputs, study_selectivity
from test_e2e import harness

N = 300  # the paper preset's batch is N=2000; the first 300 rows are the same rows


@pytest.mark.parametrize("arch", ["gpt_neox", "olmo"])
def test_paper_preset_equals_the_study(tmp_path, arch):
    model = handwired_model(arch, 256, 10000, d_model=128)
    model.save_pretrained(tmp_path / "ckpts" / "step1000")
    proc = harness("experiment=paper", "model=local", f"model.repo={tmp_path / 'ckpts'}", f"model.name=hw-{arch}",
                   f"data.n={N}", "probe.pr.n=100", "probe.null.draws=50", "runner.device=cpu",
                   "runner.progress_bar=false", "logger=none", f"paths.root_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "results" / "paper" / f"hw-{arch}" / "step1000"
    heads = pd.read_parquet(folder / "heads.parquet")
    scalars = json.loads((folder / "summary.json").read_text())["scalars"]

    inp = study_inputs(N, 256, 100, 10000)  # the study's batch: no BOS, vocab [100, 10000)
    want = study_selectivity(last_query_rows(model, inp.ids), inp)
    shape = want["induction"].shape
    col = lambda c: heads[f"selectivity.{c}"].to_numpy().reshape(shape)
    for c, v in want.items():
        np.testing.assert_allclose(col(c), v, rtol=1e-5, err_msg=c)
    best = study_best_class(want)
    np.testing.assert_array_equal(col("best_class"), best)
    np.testing.assert_array_equal(col("bos"), want["first_token"] >= 30)
    np.testing.assert_array_equal(col("bos_best"), best == "first_token")
    assert scalars["selectivity.n_valid"] == inp.valid.sum()
    assert scalars["selectivity.bos_fraction"] == pytest.approx((want["first_token"] >= 30).mean())
    assert scalars["selectivity.bos_best_fraction"] == pytest.approx((best == "first_token").mean())
    assert scalars["selectivity.bos_fraction"] > scalars["selectivity.bos_best_fraction"] > 0  # the rules differ
    assert set(best.ravel()) >= {"induction", "previous_token", "duplicate", "first_token", "self", "local"}
