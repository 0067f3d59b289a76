"""The GPT-NeoX zoo suite really forms an induction circuit (checked with an independent eager computation).

Builds the real recipe up to step 3500 (`until`: the same weights as the full 11500-step build up to there; the
circuit forms at step 2875): ~9 minutes on one CPU thread, the longest test (its file runs on a worker of its own
under `make test`). The full suites' targets, sinks included, are `tests/test_zoo_targets.py`'s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from reference import induction_score, last_query_rows, load_eager, prev_token_score, study_inputs, study_selectivity

from harness.zoo import build

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MODEL = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "zoo-neox.yaml"), resolve=True)  # seed 0
UNTIL = 3500  # a revision 5 checkpoints past formation, before the sink phases change the picture


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "zoo"), version_base="1.3"):
        cfg = compose("build", overrides=[f"cache_dir={cache}", "suites=[neox]", "progress=false", f"until={UNTIL}",
                                          "live.enabled=false"])  # the build alone (its results would go to ./results)
    (result,) = build(cfg)
    assert result["status"] == "partial"
    return cache, cfg.suite.neox


def probe_batch():
    b = MODEL["batch"]
    return study_inputs(500, b["seq_len"], b["vocab_lo"], b["vocab_hi"], MODEL["bos_id"] if b["bos"] else None)


def test_induction_circuit_forms_inside_the_grid(suite):
    cache, recipe = suite
    batch = probe_batch()
    lo, hi, bos = MODEL["batch"]["vocab_lo"], MODEL["batch"]["vocab_hi"], MODEL["bos_id"]
    rep = int(recipe.data.held_out[-1])  # a repeat length the suite never trained on

    start = load_eager(MODEL["repo"], "step0", cache)
    assert study_selectivity(last_query_rows(start, batch.ids), batch)["induction"].max() < 50

    formed = load_eager(MODEL["repo"], f"step{UNTIL}", cache)
    sel = study_selectivity(last_query_rows(formed, batch.ids), batch)
    ind = induction_score(formed, rep, 100, lo, hi, bos, seed=1)
    prev = prev_token_score(formed, MODEL["batch"]["seq_len"], 100, lo, hi, bos, seed=2)
    circuit = np.argwhere((sel["induction"] >= 50) & (ind >= 0.4))
    assert len(circuit), (f"no head with induction selectivity >= 50x and score >= 0.4 at length {rep}: "
                          f"max selectivity {sel['induction'].max():.1f}, max score {ind.max():.2f}")
    layer = circuit[:, 0].min()
    assert prev[:layer].max() >= 0.4, f"no previous-token head below layer {layer}: {prev.round(2)}"
