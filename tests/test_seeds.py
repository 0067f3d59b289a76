"""Seeds side by side, end to end: three seeds of the embedded NeoX suite (short smoke builds in a scratch hub
cache, `harness.zoo` with seed=0,1,2), probed by one multirun over `model.seed`, then `python -m harness.report`.
The family's milestones (median and range over the seeds, in steps and tokens) and its band are checked against
what this file computes from the three per-seed findings.json files, and the band is drawn in a real browser.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from test_report import Tables, open_page, run_report
from test_zoo import ROOT, zoo_cfg

from harness.zoo import build

pytestmark = pytest.mark.slow  # ~1 min: three builds, 27 probed revisions, the report, a browser
SEEDS = (0, 1, 2)
MODELS = ("zoo-neox", "zoo-neox-seed1", "zoo-neox-seed2")
# After 32 smoke steps attention is near uniform (every selectivity 1.00-1.07x): thresholds just above 1x make
# heads cross at different revisions in different seeds, so milestones are reached by all, some or no seeds.
THRESHOLDS = ("thresholds.induction=1.003", "thresholds.bos=1.01")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seeds")
    hub = tmp / "hub"
    for seed in SEEDS:
        (done,) = build(zoo_cfg(hub, "suites=[neox]", f"seed={seed}", "smoke_recipe.steps=32",
                                "smoke_recipe.ckpt_every=8"))
        assert done["status"] == "built"
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}, "HF_HUB_CACHE": str(hub),
           "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    probe = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "model=zoo-neox", f"model.seed={','.join(map(str, SEEDS))}",
         "experiment_name=seeds", f"paths.root_dir={tmp}", "logger=none", "data.n=200", "runner.progress_bar=false",
         *THRESHOLDS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = run_report(tmp, "experiment_name=seeds", env={"HF_HUB_CACHE": str(hub)})
    assert report.returncode == 0, report.stderr[-3000:]
    exp = tmp / "results" / "seeds"
    per_seed = {m: json.loads((exp / m / "findings.json").read_text()) for m in MODELS}
    return {"tmp": tmp, "exp": exp, "probe": probe, "report": report, "per_seed": per_seed,
            "family": json.loads((exp / "families" / "zoo-neox.json").read_text()),
            "html": (exp / "report.html").read_text()}


def expected(per_seed: dict) -> dict:
    """Per milestone, from the per-seed findings only: (seeds reaching it, (median, min, max) of steps and of
    tokens over those seeds, or None)."""
    out = {}
    for key in next(iter(per_seed.values()))["milestones"]:
        hits = [f["milestones"][key] for f in per_seed.values() if f["milestones"][key]]
        spread = lambda v: (float(np.median(v)), min(v), max(v)) if v else None  # noqa: E731
        out[key] = (len(hits), spread([h["step"] for h in hits]), spread([h["tokens"] for h in hits]))
    return out


def test_store_and_findings_record_family_and_seed(run):
    for model, seed in zip(MODELS, SEEDS):
        f = run["per_seed"][model]
        assert (f["family"], f["seed"]) == ("zoo-neox", seed)
        summary = json.loads((run["exp"] / model / "step8" / "summary.json").read_text())
        assert summary["provenance"]["family"] == "zoo-neox" and summary["provenance"]["seed"] == seed
        assert summary["provenance"]["repo"] == f"circuit-trajectories/{model}"
    assert "families/zoo-neox.json (3 seeds)" in run["probe"].stdout  # the multirun's last job writes it
    assert (run["exp"] / "families" / "zoo-neox.png").is_file()


def test_family_milestones_are_median_and_range_over_the_seeds(run):
    fam, want = run["family"], expected(run["per_seed"])
    assert fam["models"] == list(MODELS) and fam["seeds"] == list(SEEDS) and fam["n_seeds"] == 3
    assert list(fam["milestones"]) == list(want)
    for key, (n, steps, tokens) in want.items():
        got = fam["milestones"][key]
        assert got["n_reached"] == n, key
        for unit, values in (("steps", steps), ("tokens", tokens)):
            assert (None if got[unit] is None else (got[unit]["median"], got[unit]["min"], got[unit]["max"])) == values
    # not vacuous: some milestone is reached by two or more seeds at different steps
    assert any(n >= 2 and steps[1] < steps[2] for n, steps, _ in want.values()), want


def test_html_family_table(run):
    from harness.analysis.words import tokens_str

    number = lambda v: str(int(v)) if float(v).is_integer() else f"{v:.1f}"  # noqa: E731
    header, *rows = Tables(run["html"]).tables["family-milestones"]
    table = {r[1]: dict(zip(header, r)) for r in rows}
    for key, (n, steps, tokens) in expected(run["per_seed"]).items():
        row = table[key]
        assert row["family"] == "zoo-neox" and row["seeds reaching it"] == f"{n} of 3"
        if steps is None:
            assert (row["median (step)"], row["range (step)"], row["median (tokens)"]) == ("never", "-", "never")
            continue
        assert row["median (step)"] == number(steps[0]) and row["range (step)"] == f"{steps[1]} - {steps[2]}"
        assert row["median (tokens)"] == tokens_str(tokens[0])
        assert row["range (tokens)"] == f"{tokens_str(tokens[1])} - {tokens_str(tokens[2])}"


def test_band_is_median_and_range_of_the_seeds_series(run):
    band = run["family"]["series"]
    tokens = [f["tokens"] for f in run["per_seed"].values()]
    assert band["x"] == "tokens" and band["at"] == tokens[0] == tokens[1] == tokens[2]  # one grid: every revision
    for key in ("bos_fraction", "n_induction", "induction_max"):
        values = np.array([f[key] for f in run["per_seed"].values()])  # seeds x revisions
        assert np.allclose(band[key]["median"], np.median(values, axis=0))
        assert band[key]["min"] == values.min(0).tolist() and band[key]["max"] == values.max(0).tolist()
    assert any(lo < hi for lo, hi in zip(band["bos_fraction"]["min"], band["bos_fraction"]["max"]))


def test_band_is_drawn_in_a_browser(run, tmp_path):
    page = run["exp"] / "report.html"
    dom, console = open_page(page, tmp_path, "--dump-dom")
    assert not console, console
    start = dom.index('id="fig-seeds"')
    figure = dom[start:dom.index('id="fig-bos-layers-0"', start)]
    assert 'class="main-svg"' in figure
    fills = re.findall(r'<path class="js-fill" d="([^"]+)"', figure)
    assert len(fills) == 3  # one shaded min-max band per panel
    for d in fills:  # a closed outline with area: out along the max, back along the min
        ys = [float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", d)]
        assert d.endswith("Z") and len(ys) >= 4 and len(set(ys)) > 1, d
    assert "Seeds side by side" in dom and '<table id="family-milestones">' in dom


def test_wandb_report_groups_the_seeds(run):
    spec = json.loads((run["exp"] / "wandb_report.json").read_text())
    blocks = spec["spec"]["blocks"]
    assert "Seeds side by side" in [b["children"][0]["text"] for b in blocks if b["type"] == "heading"]
    panels = [p["config"] for b in blocks if b["type"] == "panel-grid"
              for p in b["metadata"]["panelBankSectionConfig"]["panels"] if p["viewType"] == "Run History Line Plot"]
    grouped = [c for c in panels if c.get("groupBy")]
    assert [c["metrics"][0] for c in grouped] == ["selectivity.bos_fraction", "selectivity.n_induction",
                                                  "selectivity.induction_max"]
    assert all((c["groupBy"], c["groupAgg"], c["groupArea"]) == ("model.value.family", "median", "minmax")
               for c in grouped)


def test_one_seed_looks_as_before(run, tmp_path):
    """A family of one seed is no family: no families file, no seeds section."""
    from harness.analysis import analyze_families, load_findings
    from harness.report.html import build_html

    models = {"zoo-neox": load_findings(run["exp"] / "zoo-neox")}
    assert analyze_families(tmp_path, {"zoo-neox": models["zoo-neox"][0]}) == {}
    assert not (tmp_path / "families").exists()
    html = build_html(models, "one seed", {})
    assert 'id="seeds"' not in html and "family-milestones" not in html
