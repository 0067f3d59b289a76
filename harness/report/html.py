"""The cross-model report as ONE self-contained HTML file: opens from disk, no network, no server.

plotly.js is inlined once (the first figure); later figures reuse it. Sections (their ids are stable; tests and
readers link to them): findings, trajectories, milestones, seeds (only where the experiment holds a family of
seeds), bos-layers, early-screen, pr.
"""
from __future__ import annotations

from html import escape

import pandas as pd
import plotly.io as pio

from harness.report import figures, tables

SECTIONS = {
    "findings": "Findings in words",
    "trajectories": "Trajectories against training tokens",
    "milestones": "Milestones and lags",
    "seeds": "Seeds side by side: median and range over each family's seeds",
    "bos-layers": "BOS-classified heads per layer (F1)",
    "early-screen": "Early screen: recall of the final induction circuit (F4)",
    "pr": "PR vs induction selectivity of the final circuit's heads (F5)",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td ul { margin: 0; padding-left: 1.2em; }
.note { color: #666; font-size: 0.9em; } nav a { margin-right: 1em; }
"""


class _Figures:
    """Figure -> HTML snippet; only the first snippet carries plotly.js (inlined, not a CDN link)."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig, name: str) -> str:
        self.count += 1
        return pio.to_html(fig, full_html=False, include_plotlyjs=self.count == 1, div_id=f"fig-{name}",
                           config={"displaylogo": False, "responsive": True})


def table_html(header: list[str], rows: list[list], table_id: str) -> str:
    """Cells are text, escaped; a cell given as a list becomes a bullet list."""
    def cell(c):
        if isinstance(c, list):
            return "<ul>" + "".join(f"<li>{escape(str(x))}</li>" for x in c) + "</ul>"
        return escape(str(c))
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(f'<tr data-model="{escape(str(r[0]))}">' + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def build_html(models: dict[str, tuple[dict, pd.DataFrame]], title: str,
               families: dict[str, dict] | None = None) -> str:
    """`models`: model name -> (findings, trajectory frame), as `harness.analysis.load_findings` gives them;
    `families`: family -> its findings over its seeds (`harness.analysis.analyze_families`), if any."""
    if not models:
        raise ValueError("build_html: no model to report")
    fig = _Figures()
    findings = {name: f for name, (f, _) in models.items()}
    axis = figures.Axis(models)
    parts = {}

    header, rows = tables.verdict_table(findings)
    words = [[name, f.get("summary", [])] for name, f in findings.items()]
    parts["findings"] = (table_html(["model", "findings"], words, "findings-words")
                         + table_html(header, rows, "verdicts"))
    parts["trajectories"] = (note("One colour per model; stars mark bos_50 (top) and induction_3 (middle); the "
                                  "dotted line is the induction-circuit threshold. Step 0 sits at the left edge.")
                             + fig(figures.trajectories(models, axis), "trajectories"))
    parts["milestones"] = (note("First revision reaching each milestone (tokens, revision); lag = tokens at bos_50 / "
                                "tokens at induction_3.") + table_html(*tables.milestone_table(findings), "milestone-table"))
    if families:
        parts["seeds"] = (
            note("Models of one family that differ only in seed. Median and range (min - max) over the seeds that "
                 "reach each milestone; the last column says how many do. Below: the median over the seeds as a "
                 "line, their range shaded, on the revisions every seed has.")
            + table_html(*tables.family_table(families), "family-milestones") + fig(figures.seed_bands(families), "seeds"))
    parts["bos-layers"] = "".join(fig(figures.bos_layers(name, f, traj), f"bos-layers-{i}")
                                  for i, (name, (f, traj)) in enumerate(models.items()))
    recall_fig, recall_notes = figures.recall(models, axis)
    parts["early-screen"] = "".join(map(note, recall_notes)) + (
        fig(recall_fig, "early-screen") if len(recall_notes) < len(models) else "")
    pr = []
    for i, (name, (f, traj)) in enumerate(models.items()):
        pr_fig = figures.pr_vs_induction(name, f, traj)
        pr.append(fig(pr_fig, f"pr-{i}") if pr_fig is not None else note(
            f"{name}: no PR measured (add probe participation_ratio)" if f["signals"].get("pr") not in traj
            else f"{name}: no final induction circuit, nothing to compare."))
    parts["pr"] = "".join(pr)

    rules = next(iter(findings.values())).get("rules", {})
    nav = "".join(f'<a href="#{k}">{escape(v)}</a>' for k, v in SECTIONS.items() if k in parts)
    body = "".join(f'<section id="{k}"><h2>{escape(SECTIONS[k])}</h2>{parts[k]}</section>' for k in SECTIONS
                   if k in parts)
    meta = note(f"Models: {', '.join(models)}. Rules: " + ", ".join(f"{k}={v}" for k, v in rules.items()))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{meta}<nav>{nav}</nav>{body}</body></html>\n")
