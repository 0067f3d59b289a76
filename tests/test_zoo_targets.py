"""The built embedded suites meet the targets of the study's trajectory, checked over every revision with an
independent eager computation (tests/reference.py), not with the harness.

Runs on the suites in the hub cache (`make demo` builds them; HF_HUB_CACHE / HF_HOME honoured) and skips a
suite that is not built. Targets per suite:
- final revision: a head with induction selectivity >= 50x and induction score >= 0.4 at a repeat length never
  trained, and a previous-token head (score >= 0.4) in an earlier layer;
- the induction circuit forms (first revision with a >= 50x head) strictly inside the grid;
- BOS-classified heads (first-token selectivity >= 30x) at the final revision, one of them not an induction-circuit
  head, none in layer 0 at any revision, and the first revision with one comes at >= 2x the training tokens of the
  formation revision (strict xfail for the suites in SINKS_PENDING).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from reference import induction_score, last_query_rows, load_eager, prev_token_score, study_inputs, study_selectivity

from harness.sources import hubcache

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
N = 1000  # probe sequences per revision (the harness screen uses 2000; ratios of means are stable at 1000)
# Suites whose pinned build (isa=avx2) misses a target: a strict xfail, so a recipe that starts meeting it
# has to be moved out of the set. OLMoE: no sink (what was tried: docs/zoo.md).
SINKS_PENDING = {"olmoe"}


def revisions(repo: str) -> list[tuple[int, str]]:
    refs = hubcache.repo_folder(repo) / "refs"
    steps = [(int(p.name[4:]), p.name) for p in refs.glob("step*")] if refs.is_dir() else []
    return sorted(steps)


@pytest.fixture(scope="module", params=["neox", "olmo", "olmoe"])
def trajectory(request):
    model = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"zoo-{request.param}.yaml"), resolve=True)
    revs = revisions(model["repo"])
    if not revs:
        pytest.skip(f"{model['repo']} is not built in {hubcache.cache_dir()} (run `make demo`)")
    b = model["batch"]
    batch = study_inputs(N, b["seq_len"], b["vocab_lo"], b["vocab_hi"], model["bos_id"] if b["bos"] else None)
    rows = []
    for step, name in revs:
        sel = study_selectivity(last_query_rows(load_eager(model["repo"], name), batch.ids), batch)
        rows.append(dict(step=step, tokens=step * model["tokens_per_step"], induction=sel["induction"],
                         first_token=sel["first_token"]))
    return model, revs, rows


def test_final_revision_has_an_induction_circuit(trajectory):
    model, revs, rows = trajectory
    lo, hi, bos = model["batch"]["vocab_lo"], model["batch"]["vocab_hi"], model["bos_id"]
    final = load_eager(model["repo"], revs[-1][1])
    meta = json.loads((hubcache.resolve(model["repo"], revs[-1][1]) / "zoo_recipe.json").read_text())
    rep = int(meta["recipe"]["data"]["held_out"][-1])  # never trained
    ind = induction_score(final, rep, 100, lo, hi, bos, seed=1)
    circuit = np.argwhere((rows[-1]["induction"] >= 50) & (ind >= 0.4))
    assert len(circuit), (f"no head >= 50x with induction score >= 0.4 at length {rep}: "
                          f"max selectivity {rows[-1]['induction'].max():.1f}, max score {ind.max():.2f}")
    prev = prev_token_score(final, model["batch"]["seq_len"] - 1, 100, lo, hi, bos, seed=2)
    layer = circuit[:, 0].min()
    assert prev[:layer].max() >= 0.4, f"no previous-token head below layer {layer}: {prev.round(2)}"


def formation(rows) -> int | None:
    return next((i for i, r in enumerate(rows) if r["induction"].max() >= 50), None)


def test_induction_forms_inside_the_grid(trajectory):
    _, _, rows = trajectory
    i = formation(rows)
    assert i is not None and 0 < i < len(rows) - 1, f"formation at revision {i} of {len(rows)}"


def test_bos_heads_form_after_the_circuit_outside_layer_0(trajectory, request):
    model, _, rows = trajectory
    if model["name"].removeprefix("zoo-") in SINKS_PENDING:
        request.applymarker(pytest.mark.xfail(strict=True, reason="embedded sinks: this suite's pinned "
                                              "build has no BOS head at 2x the formation tokens or at the end"))
    final = (rows[-1]["first_token"] >= 30) & (rows[-1]["induction"] < 50)  # a sink, not an induction-circuit head
    assert final.any(), f"no BOS-classified head at the final revision: max {rows[-1]['first_token'].max():.1f}x"
    assert not any((r["first_token"][0] >= 30).any() for r in rows), "a BOS-classified head in layer 0"
    first_bos = next(r for r in rows if (r["first_token"] >= 30).any())
    formed = rows[formation(rows)]
    assert first_bos["tokens"] >= 2 * formed["tokens"], (
        f"first BOS head at step {first_bos['step']}, induction formed at step {formed['step']}")
