"""The findings rules (docs/method.md section 4) on hand-built stores with known answers, written with the store's writer.

Model "step": 4 layers x 4 heads, six revisions at 1M..32M tokens, plus an annealed `main` (no step) and a
duplicate revision that must be left out (their values would change every answer). Its story, by construction:
- BOS heads (first-token >= 30x) only in layers 2-3: 0, 0, 1, 2, 8, 8 of 16 -> sharp jump between r3 and r4;
- induction heads (>= 50x): L0H3 from r0, L1H0 from r1, L1H1, L2H3 and L1H2 from r2 (L1H2 dissolves at r4),
  L3H3 from r3 -> counts 1, 2, 5, 6, 5, 5;
- PR: L1H0 doubles at r2 after crossing at r1 (lag), L1H1 at r1 before crossing at r2 (lead), L2H3 at its
  crossing r2 (same), L3H3 never (no_rise), L0H3 crosses at r0 (undetermined).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import AnalysisError, analyze_model
from harness.results import store
from harness.run.job import declared
from probes.participation_ratio import ParticipationRatio
from probes.selectivity import Selectivity

ROOT = Path(__file__).resolve().parents[1]
L, H = 4, 4
TOKENS = [1_000_000 * 2**i for i in range(6)]

# What a job running the screen and PR records beside each result: the columns' roles, the thresholds.
DECLARED = {k: v for k, v in declared([Selectivity(), ParticipationRatio()]).items() if k != "versions"}

def write_revision(model_dir, name, step, tokens, cols, duplicate_of=None, declares=DECLARED):
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    heads = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), **{k: v.ravel() for k, v in cols.items()}})
    prov = {"model": model_dir.name, "repo": "test/" + model_dir.name, "revision": name, "step": step,
            "tokens": tokens, "duplicate_of": duplicate_of}
    store.write(model_dir / name, heads, {"scalars": {}, "info": {}, "provenance": prov, **declares})


def step_model(model_dir: Path, with_pr=True, declares=DECLARED):
    bos_heads = [[], [], [(2, 0)], [(2, 0), (2, 1)], [(2, h) for h in range(4)] + [(3, h) for h in range(4)]]
    bos_heads.append(bos_heads[-1])
    induction_from = {(0, 3): 0, (1, 0): 1, (1, 1): 2, (2, 3): 2, (1, 2): 2, (3, 3): 3}
    pr_by_head = {(1, 0): [2, 2.5, 4.5, 5, 5, 5], (1, 1): [1.5, 3.1, 3.2, 4, 4, 4], (2, 3): [2, 2, 4, 4, 4, 4],
                  (3, 3): [3] * 6, (0, 3): [1, 1, 1, 1, 1, 1]}
    for r, tokens in enumerate(TOKENS):
        first = np.full((L, H), 2.0)
        for lh in bos_heads[r]:
            first[lh] = 45.0
        ind = np.full((L, H), 3.0)
        for lh, r0 in induction_from.items():
            if r >= r0 and not (lh == (1, 2) and r >= 4):
                ind[lh] = 80.0
        cols = {"selectivity.induction": ind, "selectivity.first_token": first,
                "selectivity.previous_token": np.where(np.arange(L)[:, None] == 0, 150.0 * r, 1.0) + 0 * ind,
                "selectivity.bos": ~(first >= 30)}  # a stored boolean that disagrees: the rules must not read it
        if with_pr:
            pr = np.full((L, H), 1.5)
            for lh, series in pr_by_head.items():
                pr[lh] = series[r]
            cols["pr.entropy"] = pr
        write_revision(model_dir, f"r{r}", 1000 * 2**r, tokens, cols, declares=declares)
    everything = {"selectivity.induction": np.full((L, H), 99.0), "selectivity.first_token": np.full((L, H), 99.0)}
    write_revision(model_dir, "main", None, None, everything)  # annealed: no step
    write_revision(model_dir, "r2-copy", 4000, TOKENS[2], everything, duplicate_of="r2")


def mile(name, i):
    return {"revision": f"r{i}", "step": 1000 * 2**i, "tokens": TOKENS[i]}


def test_step_model(tmp_path):
    step_model(tmp_path / "exp" / "step")
    f = analyze_model(tmp_path / "exp" / "step")
    assert f["revisions"] == [f"r{i}" for i in range(6)] and f["tokens"] == TOKENS
    assert f["bos_fraction"] == [0, 0, 1 / 16, 2 / 16, 8 / 16, 8 / 16]
    assert f["n_induction"] == [1, 2, 5, 6, 5, 5]
    assert f["milestones"] == {"induction_3": mile("", 2), "induction_5": mile("", 2), "bos_10": mile("", 3),
                               "bos_30": mile("", 4), "bos_50": mile("", 4), "bos_70": None}
    assert f["lag"] == pytest.approx(TOKENS[4] / TOKENS[2])  # 4.0
    assert f["bos_free_layers"] == [0, 1]
    assert f["bos_shape"] == {"verdict": "sharp", "largest_step_share": pytest.approx(0.375 / 0.5),
                              "between": ["r3", "r4"], "rise": 0.5}
    assert f["induction_shape"]["verdict"] == "sharp" and f["induction_shape"]["between"] == ["r1", "r2"]
    assert f["induction_shape"]["largest_step_share"] == pytest.approx(3 / 5)
    screen = f["early_screen"]
    assert screen["final_circuit"] == ["L0H3", "L1H0", "L1H1", "L2H3", "L3H3"]
    assert screen["recall"] == pytest.approx([1 / 5, 2 / 5, 4 / 5, 1, 1, 1])
    assert screen["first_at"] == {"1/3": {"revision": "r1", "tokens": TOKENS[1], "token_fraction": 2 / 32},
                                  "2/3": {"revision": "r2", "tokens": TOKENS[2], "token_fraction": 4 / 32},
                                  "1": {"revision": "r3", "tokens": TOKENS[3], "token_fraction": 8 / 32}}
    assert {h: (v["verdict"], v["lead_revisions"]) for h, v in f["pr_lead"].items()} == {
        "L0H3": ("undetermined", None), "L1H0": ("lag", -1), "L1H1": ("lead", 1), "L2H3": ("same", 0),
        "L3H3": ("no_rise", None)}
    assert f["pr_lead"]["L1H0"]["crossing"] == "r1" and f["pr_lead"]["L1H0"]["pr_rise"] == "r2"
    assert f["bos_layer_counts"][4] == [0, 0, 4, 4]
    assert set(f) >= {"model", "revisions", "tokens", "bos_fraction", "n_induction", "milestones", "lag",
                      "bos_free_layers", "bos_shape", "induction_shape", "early_screen", "pr_lead", "rules"}
    assert f["skipped"] == ["main (no step)", "r2-copy (duplicate of r2)"]

    events = pd.read_parquet(tmp_path / "exp" / "step" / "heads_events.parquet")
    got = {(e["class"], e["name"]): e["revision"] for _, e in events.iterrows()}
    assert got[("induction", "L1H2")] == "r2" and got[("induction", "L0H3")] == "r0"  # dissolved heads count too
    assert got[("first_token", "L3H0")] == "r4" and got[("previous_token", "L0H0")] == "r1"  # 150x at r1
    assert len([k for k in got if k[0] == "induction"]) == 6

    traj = pd.read_parquet(tmp_path / "exp" / "step" / "trajectory.parquet")
    assert len(traj) == 6 * L * H and list(traj.columns[:5]) == ["revision", "step", "tokens", "layer", "head"]
    assert traj.groupby("revision", sort=False)["is_bos"].sum().tolist() == [0, 0, 1, 2, 8, 8]
    assert json.loads((tmp_path / "exp" / "step" / "findings.json").read_text())["lag"] == pytest.approx(4.0)
    assert any("jumps from 12% to 50% between 8.0M tokens and 16M tokens (sharp, share 0.75)" in s
               for s in f["summary"]), f["summary"]


def test_thresholds_come_from_the_store(tmp_path):
    """The findings classify heads with the thresholds the probes recorded, not with numbers of their own."""
    strict = {**DECLARED, "thresholds": {**DECLARED["thresholds"], "bos": 50.0, "induction": 90.0}}
    step_model(tmp_path / "step", declares=strict)
    f = analyze_model(tmp_path / "step")
    assert f["bos_fraction"] == [0] * 6 and f["n_induction"] == [0] * 6
    assert f["bos_shape"]["verdict"] == "none" and f["thresholds"]["bos"] == 50.0


def test_revisions_probed_under_other_thresholds_are_refused(tmp_path):
    step_model(tmp_path / "step")
    other = {**DECLARED, "thresholds": {**DECLARED["thresholds"], "induction": 40.0}}
    write_revision(tmp_path / "step", "r6", 64000, 64_000_000, {"selectivity.induction": np.zeros((L, H)),
                                                               "selectivity.first_token": np.zeros((L, H))},
                   declares=other)
    with pytest.raises(AnalysisError, match="different thresholds"):
        analyze_model(tmp_path / "step")


def test_a_jump_between_revisions_that_round_alike_names_them(tmp_path):
    d = tmp_path / "close"
    for r, (step, n_bos) in enumerate([(8000, 0), (8500, 0), (8625, 1)]):
        first = np.zeros((L, H))
        first.ravel()[:n_bos] = 31.0
        write_revision(d, f"step{step}", step, step * 4096, {"selectivity.induction": np.zeros((L, H)),
                                                             "selectivity.first_token": first})
    f = analyze_model(d)  # 34.8M and 35.3M tokens both read "35M"
    assert any("between 35M tokens (step8500) and 35M tokens (step8625)" in s for s in f["summary"]), f["summary"]


def test_ramp_without_circuit_or_pr(tmp_path):
    d = tmp_path / "ramp"
    for r in range(5):  # 0, 2, 4, 6, 8 BOS heads of 16: equal steps
        first = np.zeros((L, H))
        first.ravel()[:2 * r] = 31.0
        write_revision(d, f"step{r}", r, None, {"selectivity.induction": np.full((L, H), 49.9),
                                                "selectivity.first_token": first})
    f = analyze_model(d)
    assert f["bos_shape"] == {"verdict": "gradual", "largest_step_share": pytest.approx(0.25),
                              "between": ["step0", "step1"], "rise": 0.5}
    assert f["milestones"]["induction_3"] is None and f["lag"] is None and f["tokens"] == [None] * 5
    assert f["induction_shape"]["verdict"] == "none" and "pr_lead" not in f  # a head that never forms, no PR
    assert f["early_screen"] == {"final_circuit": [], "recall": [None] * 5,
                                 "first_at": {"1/3": None, "2/3": None, "1": None}}
    assert f["milestones"]["bos_50"]["revision"] == "step4" and f["bos_free_layers"] == [2, 3]


def test_no_bos_heads_at_all(tmp_path):
    d = tmp_path / "quiet"
    for r in range(3):
        write_revision(d, f"step{r}", r * 10, r * 1000, {"selectivity.induction": np.full((L, H), 60.0 * r),
                                                         "selectivity.first_token": np.full((L, H), 29.9)})
    f = analyze_model(d)
    assert all(f["milestones"][k] is None for k in ("bos_10", "bos_30", "bos_50", "bos_70"))
    assert f["bos_shape"]["verdict"] == "none" and f["lag"] is None and f["bos_free_layers"] == [0, 1, 2, 3]
    assert f["milestones"]["induction_3"]["revision"] == "step1"
    assert f["early_screen"]["first_at"]["1"]["token_fraction"] == 0.5
    assert any("no BOS-classified head at any revision" in s for s in f["summary"])


def test_missing_screen_is_one_clear_error(tmp_path):
    write_revision(tmp_path / "m", "step1", 1, 1, {"sink.alpha": np.zeros((L, H))})
    with pytest.raises(AnalysisError, match=r"column selectivity.induction.*probe=selectivity"):
        analyze_model(tmp_path / "m")


def test_analyze_entry_point(tmp_path):
    step_model(tmp_path / "exp" / "step", with_pr=False)
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness", "analyze", f"paths.root_dir={tmp_path}",
                                     f"paths.results_dir={tmp_path}", *a], cwd=ROOT, capture_output=True, text=True)
    proc = run("experiment_name=exp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step: the BOS fraction jumps" in proc.stdout
    assert (tmp_path / "exp" / "step" / "findings.json").exists()
    proc = run("experiment_name=nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "(experiments in" in proc.stderr
    assert proc.stderr.strip().endswith(": exp)")
    proc = run("experiment_name=exp", "models=[step,other]")
    assert proc.returncode == 2 and "other" in proc.stderr and "step" in proc.stderr


def test_results_reused_from_before_families_are_relabelled(tmp_path):
    """A store written without family/seed (an older run): the job that completes the grid labels it, the heads
    and their recorded sha256 untouched, and the findings carry the labels."""
    model = tmp_path / "m"
    step_model(model)
    assert analyze_model(model)["family"] is None
    folders = sorted(p.parent for p in model.glob("*/summary.json"))
    assert len(store.record_labels(folders, family="fam", seed=3)) == len(folders)
    assert store.record_labels(folders, family="fam", seed=3) == []  # already labelled: nothing rewritten
    assert all(store.summary(f) is not None for f in folders)  # still complete: heads.parquet is the one named
    f = analyze_model(model)
    assert (f["family"], f["seed"]) == ("fam", 3)


def test_family_spread_over_seeds_that_reach_a_milestone():
    """Median and range over the seeds that reach each milestone; ints before named seeds; one seed: no family."""
    from harness.analysis.families import group, summarize

    def seed(s, step, lag=None):
        at = step and {"revision": f"step{step}", "step": step, "tokens": step * 10}
        return {"family": "f", "seed": s, "milestones": {"induction_3": at, "bos_50": None}, "lag": lag,
                "tokens": [0, 10, 20, 40], "steps": [0, 1, 2, 4], "bos_fraction": [0, s if s != "x" else 9, 0, 1],
                "n_induction": [0, 1, 2, 3], "induction_max": [1.0, 2.0, 3.0, 4.0]}

    found = {"a": seed(10, 4, 2.0), "b": seed("x", None), "c": seed(2, 1, 6.0), "d": seed(1, 2), "lone": {}}
    assert group(found) == {"f": ["d", "c", "a", "b"]}
    fam = summarize("f", {m: found[m] for m in group(found)["f"]})
    m = fam["milestones"]["induction_3"]
    assert (m["n_reached"], m["n_seeds"]) == (3, 4)
    assert m["steps"] == {"median": 2, "min": 1, "max": 4, "n": 3} and m["tokens"]["median"] == 20
    assert fam["milestones"]["bos_50"]["steps"] is None and fam["lag"] == {"median": 4.0, "min": 2.0, "max": 6.0, "n": 2}
    assert fam["series"]["at"] == [0, 10, 20, 40]
    assert fam["series"]["bos_fraction"] == {"median": [0, 5.5, 0, 1], "min": [0, 1, 0, 1], "max": [0, 10, 0, 1]}
    assert group({"a": seed(1, 1)}) == {}
