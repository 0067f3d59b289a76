"""The report over a three-model store written with the store's own writer: HTML, W&B report spec, the entry
point, and the page opened in a real headless browser (Debian's chromium-headless-shell; `make test` installs it).

The three models, by construction (3 layers x 4 heads, tokens = 2048 x step):
- alpha: steps 0..8000; BOS heads (layers 1-2) 0, 0, 1, 1, 6, 7 of 12 -> a sharp jump 8.3% -> 50% between
  step2000 and step4000; induction heads L1H3, L2H0 from step1000 and L2H1 from step2000 (induction_3 at step2000,
  4.1M tokens); PR: L1H3 lead, L2H0 same, L2H1 no_rise; lag = 8.192M / 4.096M = 2.0x.
- beta: steps 0..16000 plus an annealed `main` and a duplicate revision (both left out); BOS heads in layer 2 only,
  one more per revision (0, 1, 2, 3, 4, 4 of 12: gradual, share 0.25); induction_3 at step8000 (16M tokens);
  PR doubles at step1000 for every head: all three circuit heads lead.
- gamma: no BOS head at all; L0H0, L1H1, L2H2 induction heads from step500, L2H2 dissolves at step2000; no PR.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.results import store
from harness.run.job import declared
from probes.participation_ratio import ParticipationRatio
from probes.selectivity import Selectivity

ROOT = Path(__file__).resolve().parents[1]
L, H = 3, 4
EXPERIMENT = "cmp"

# What a job running the screen and PR records beside each result: the columns' roles, the thresholds.
DECLARED = {k: v for k, v in declared([Selectivity(), ParticipationRatio()]).items() if k != "versions"}

def write_revision(model_dir: Path, name, step, cols, duplicate_of=None, tokens="auto"):
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    heads = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), **{k: v.ravel() for k, v in cols.items()}})
    tokens = (None if step is None else step * 2048) if tokens == "auto" else tokens
    prov = {"model": model_dir.name, "repo": f"test/{model_dir.name}", "revision": name, "step": step,
            "tokens": tokens, "duplicate_of": duplicate_of}
    store.write(model_dir / name, heads, {"scalars": {}, "info": {}, "provenance": prov, **DECLARED})


def grids(bos=(), induction=(), pr=None):
    first = np.full((L, H), 3.0)
    for lh in bos:
        first[lh] = 40.0
    ind = np.full((L, H), 2.0)
    for lh in induction:
        ind[lh] = 90.0
    cols = {"selectivity.induction": ind, "selectivity.first_token": first,
            "selectivity.previous_token": np.ones((L, H)), "selectivity.best_class": np.full((L, H), "self")}
    if pr is not None:
        cols["pr.entropy"] = pr
    return cols


def build_store(results: Path) -> Path:
    exp = results / EXPERIMENT
    bos_alpha = [[], [], [(1, 0)], [(1, 0)], [(1, h) for h in range(4)] + [(2, 0), (2, 1)],
                 [(1, h) for h in range(4)] + [(2, 0), (2, 1), (2, 2)]]
    for r, step in enumerate([0, 500, 1000, 2000, 4000, 8000]):
        ind = [(1, 3), (2, 0)] * (r >= 2) + [(2, 1)] * (r >= 3)
        pr = np.full((L, H), 2.0)
        pr[1, 3], pr[2, 0] = 2.0 + 2 * r, 2.0 + r  # doubles at step500 (lead), at its crossing step1000 (same)
        write_revision(exp / "alpha", f"step{step}", step, grids(bos_alpha[r], ind, pr))
    for r, step in enumerate([0, 1000, 2000, 4000, 8000, 16000]):
        ind = [(0, 1), (1, 1), (2, 3)][: max(0, r - 1)]  # 1, 2, 3 heads from step2000, step4000, step8000
        write_revision(exp / "beta", f"step{step}", step, grids([(2, h) for h in range(min(r, 4))], ind,
                                                               np.full((L, H), 1.0 + r)))
    everything = grids([(lay, h) for lay in range(L) for h in range(H)], [(0, 0)], np.ones((L, H)))
    write_revision(exp / "beta", "main", None, everything)
    write_revision(exp / "beta", "step2000-copy", 2000, everything, duplicate_of="step2000")
    for r, step in enumerate([0, 500, 1000, 2000]):
        write_revision(exp / "gamma", f"step{step}", step,
                       grids([], [(0, 0), (1, 1), (2, 2)][: 3 if 0 < r < 3 else 2 * (r > 0)]))
    return exp


def run_report(tmp: Path, *overrides, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harness.report", f"paths.root_dir={tmp}", f"paths.results_dir={tmp / 'results'}",
         *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}, "WANDB_MODE": "offline",
             "WANDB_SILENT": "true", **(env or {})})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The store, then `python -m harness.report` on it (analysing all three models first)."""
    tmp = tmp_path_factory.mktemp("report")
    exp = build_store(tmp / "results")
    proc = run_report(tmp, f"experiment_name={EXPERIMENT}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "exp": exp, "proc": proc, "html": (exp / "report.html").read_text()}


class Tables(HTMLParser):
    """The page's tables by id: {table id: [[cell text, ...] per row]} (header row included)."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self._id, self._row, self._cell = {}, None, None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
            self.tables[self._id].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._id = self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data + " ")


def by_model(rows):
    header, *body = rows
    return {r[0]: dict(zip(header, r)) for r in body}


# ------------------------------------------------------------------------------------------------ entry point

def test_entry_point_analyses_then_writes_both(built):
    exp, out = built["exp"], built["proc"].stdout
    assert f"report: {exp / 'report.html'}" in out
    assert f"W&B report: {exp / 'wandb_report.json'} (offline" in out
    for model in ("alpha", "beta", "gamma"):  # no findings before: the report analysed every model
        assert (exp / model / "findings.json").is_file() and (exp / model / "trajectory.parquet").is_file()


def test_no_results_is_one_line(built):
    proc = run_report(built["tmp"], "experiment_name=nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: no results in") and str(built["tmp"] / "results" / "nope") in line
    assert line.endswith(f": {EXPERIMENT})")  # the experiments that do exist (not its models)


def test_stale_findings_are_recomputed(built, tmp_path):
    from harness.analysis import Rules
    from harness.report.collect import collect, stale

    exp = shutil.copytree(built["exp"], tmp_path / "results" / EXPERIMENT)
    assert not any(stale(exp / m, Rules()) for m in ("alpha", "beta", "gamma"))
    assert stale(exp / "alpha", Rules(sharp_share=0.6))  # other rules
    before = {m: (exp / m / "findings.json").stat().st_mtime_ns for m in ("alpha", "beta")}
    newer = before["alpha"] + 10**9
    os.utime(exp / "alpha" / "step8000" / "summary.json", ns=(newer, newer))  # a revision re-probed later
    assert stale(exp / "alpha", Rules())
    models = collect(tmp_path / "results", EXPERIMENT, ["alpha", "beta"])
    assert list(models) == ["alpha", "beta"]
    assert (exp / "alpha" / "findings.json").stat().st_mtime_ns > before["alpha"]
    assert (exp / "beta" / "findings.json").stat().st_mtime_ns == before["beta"]  # up to date: not rewritten


# ------------------------------------------------------------------------------------------------ the HTML

SECTIONS = ("findings", "trajectories", "milestones", "bos-layers", "early-screen", "pr")
FIGURES = ("trajectories", "bos-layers-0", "bos-layers-1", "bos-layers-2", "early-screen", "pr-0", "pr-1")


def test_html_is_self_contained(built):
    html = built["html"]
    assert html.count("* plotly.js v") == 1  # plotly.js inlined once, before the first figure
    assert "<script src" not in html and "<link" not in html  # nothing to fetch
    assert [f for f in FIGURES if f'id="fig-{f}"' in html] == list(FIGURES)
    assert html.count('class="plotly-graph-div"') == len(FIGURES)


def test_html_sections_models_and_words(built):
    html = built["html"]
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    words = by_model(Tables(html).tables["findings-words"])
    assert list(words) == ["alpha", "beta", "gamma"]
    for model in words:
        summary = json.loads((built["exp"] / model / "findings.json").read_text())["summary"]
        assert all(" ".join(s.split()) in words[model]["findings"] for s in summary)
    assert "step2000-copy" not in html and ">main<" not in html  # left out by the analysis
    assert "gamma: no PR measured" in html


def test_milestone_and_verdict_tables(built):
    tables = Tables(built["html"]).tables
    m = by_model(tables["milestone-table"])
    assert (m["alpha"]["induction_3"], m["alpha"]["bos_50"], m["alpha"]["bos_70"]) == (
        "4.1M (step2000)", "8.2M (step4000)", "never")
    assert m["alpha"]["lag (bos_50 / induction_3)"] == "2.0x"
    assert (m["beta"]["induction_3"], m["beta"]["bos_10"], m["beta"]["bos_50"]) == (
        "16M (step8000)", "4.1M (step2000)", "never")
    assert (m["gamma"]["induction_3"], m["gamma"]["bos_10"], m["gamma"]["lag (bos_50 / induction_3)"]) == (
        "1.0M (step500)", "never", "-")
    v = by_model(tables["verdicts"])
    assert [v[k]["BOS shape (F2)"] for k in v] == ["sharp (0.71)", "gradual (0.25)", "none"]  # 5/7, 1/4
    assert [v[k]["BOS-free layers (F1)"] for k in v] == ["0", "0, 1", "0, 1, 2"]
    assert v["alpha"]["PR lead (F5)"] == "L1H3 lead, L2H0 same, L2H1 no_rise"
    assert v["beta"]["PR lead (F5)"] == "L0H1 lead, L1H1 lead, L2H3 lead"
    assert v["gamma"]["PR lead (F5)"] == "not measured" and v["gamma"]["final circuit"] == "L0H0, L1H1"


def test_hover_names_revision_head_and_value(built):
    from harness.analysis import load_findings
    from harness.report import figures

    models = {m: load_findings(built["exp"] / m) for m in ("alpha", "beta", "gamma")}
    f, traj = models["alpha"]
    cell = figures.bos_layers("alpha", f, traj).data[0].text[2][4]  # layer 2 at step4000
    assert cell == "step4000 (8.2M tokens)<br>layer 2: 2 BOS heads<br>L2H0, L2H1"
    traces = figures.trajectories(models, figures.Axis(models)).data
    top = [t for t in traces if t.name == "alpha" and t.yaxis == "y3"][0]  # max induction selectivity
    assert list(top.text) == ["L0H0", "L0H0", "L1H3", "L1H3", "L1H3", "L1H3"]  # the first of equal maxima
    assert top.customdata[0] == "step0 (0 tokens)" and top.x[0] == 500 * 2048 / 2  # step 0 at half the first x
    pr = figures.pr_vs_induction("alpha", f, traj).data
    assert [t.name for t in pr] == ["L1H3 (lead)", "L2H0 (same)", "L2H1 (no_rise)"]


def test_wandb_report_spec(built):
    spec = json.loads((built["exp"] / "wandb_report.json").read_text())
    assert spec["displayName"] == f"circuit-trajectories: {EXPERIMENT}"
    assert spec["project"]["name"] == "circuit-trajectories"
    blocks = spec["spec"]["blocks"]
    grids = [b["metadata"] for b in blocks if b["type"] == "panel-grid"]
    for grid in grids:  # every panel grid shows the runs of the experiment's group
        [runset] = grid["runSets"]
        assert runset["filters"]["filters"] == [{"key": {"section": "run", "name": "group"}, "op": "=",
                                                 "value": EXPERIMENT, "disabled": False}]
    panels = [p for g in grids for p in g["panelBankSectionConfig"]["panels"]]
    lines = {p["config"]["metrics"][0]: p["config"] for p in panels if p["viewType"] == "Run History Line Plot"}
    assert set(lines) == {"selectivity.bos_fraction", "selectivity.n_induction", "selectivity.induction_max"}
    assert all(c["xAxis"] == "tokens" and c["xLogScale"] for c in lines.values())
    assert lines["selectivity.induction_max"]["yLogScale"]
    media = [p["config"] for p in panels if p["viewType"] == "Media Browser"]
    assert media == [{"chartTitle": "BOS heads per layer x revision", "mediaKeys": ["findings/bos_layers"]}]
    markdown = "\n".join(b["content"] for b in blocks if b["type"] == "markdown-block")
    assert "| alpha | 4.1M (step2000) | never | 8.2M (step4000) |" in markdown  # the milestone table (1/12 < 10%)
    assert "| 2 | 0 | 0 | 0 | 0 | 2 | 3 |" in markdown  # alpha's layer 2 BOS counts (F1)
    headings = [b["children"][0]["text"] for b in blocks if b["type"] == "heading"]
    assert {"alpha", "beta", "gamma", "Milestones and lags"} <= set(headings)


def test_wandb_report_reads_back_as_report_objects(built):
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from wandb_workspaces.reports.v2 import internal

    spec = json.loads((built["exp"] / "wandb_report.json").read_text())
    report = wr.Report._from_model(internal.ReportViewspec.model_validate(spec))
    plots = [p for b in report.blocks if isinstance(b, wr.PanelGrid) for p in b.panels if isinstance(p, wr.LinePlot)]
    assert [p.y[0].name for p in plots] == ["selectivity.bos_fraction", "selectivity.n_induction",
                                            "selectivity.induction_max"]


def test_without_wandb_workspaces_the_html_still_builds(built, tmp_path, monkeypatch):
    from harness.analysis import load_findings
    from harness.report import wandb_report
    from harness.report.html import build_html

    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    models = {m: load_findings(built["exp"] / m) for m in ("alpha", "gamma")}
    where = wandb_report.publish({m: f for m, (f, _) in models.items()}, EXPERIMENT, tmp_path / "w.json",
                                 project="p", entity=None, mode="offline")
    assert where.startswith("not built (wandb-workspaces is not installed") and not (tmp_path / "w.json").exists()
    assert "alpha" in build_html(models, "t")


# ------------------------------------------------------------------------------------------------ a real browser

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"]


def browser() -> list[str]:
    for cmd in (["chromium-headless-shell"], ["chromium", "--headless"]):
        if shutil.which(cmd[0]):
            return cmd
    pytest.skip("no headless browser: install Debian's chromium-headless-shell (`make browser`, as root)")


def open_page(page: Path, tmp: Path, *action) -> tuple[str, list[str]]:
    """(stdout, console lines) of one headless load of `page`; a fresh profile each time."""
    proc = subprocess.run([*browser(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *action, page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_browser_sees_script_errors(tmp_path):
    """The console check below is real: a page with an error is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>no_such_function();</script></body></html>")
    _, console = open_page(page, tmp_path, "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console), console


def test_report_renders_in_a_browser(built, tmp_path):
    from PIL import Image, ImageStat

    page = built["exp"] / "report.html"
    dom, console = open_page(page, tmp_path, "--dump-dom")
    assert not console, console  # no script error, no warning
    for fig in FIGURES:  # every figure drawn: plotly put its SVG into the figure's div
        start = dom.index(f'id="fig-{fig}"')
        end = min([dom.find(f'id="fig-{g}"', start + 1) for g in FIGURES if dom.find(f'id="fig-{g}"', start + 1) > 0]
                  or [len(dom)])
        assert 'class="main-svg"' in dom[start:end], fig
    shot = built["exp"] / "report.png"  # kept beside the report, for a person to look at
    open_page(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,3000")
    image = Image.open(shot).convert("L")
    assert image.size == (1400, 3000)
    assert ImageStat.Stat(image).stddev[0] > 20 and len(image.getcolors(256)) > 100  # not blank
