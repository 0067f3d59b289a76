"""Plotly figures of the report, all over the same x axis (training tokens, log scale) where x is training time.

`models` maps a model name to (findings, trajectory), as `harness.analysis.load_findings` returns them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from harness.analysis.headline import SERIES, label
from harness.analysis.words import tokens_str
from harness.common.heads import head_name, parse_head_name

COLORS = qualitative.Plotly


class Axis:
    """The shared x axis: training tokens when every model knows them, else training steps.

    A log axis cannot show 0 (step 0): such points are drawn at half the smallest positive x of the page,
    so that the initial value stays visible; the hover still says 0.
    """

    def __init__(self, models: dict):
        findings = [f for f, _ in models.values()]
        self.key = "tokens" if all(t is not None for f in findings for t in f["tokens"]) else "steps"
        self.title = "training tokens (log)" if self.key == "tokens" else "training step (log)"
        positive = [x for f in findings for x in f[self.key] if x]
        self.zero = min(positive) / 2 if positive else 0.5

    def x(self, f: dict) -> list[float]:
        return [x if x and x > 0 else self.zero for x in f[self.key]]


def labels(f: dict) -> list[str]:
    """Hover names of the revisions: 'step3000 (6.3B tokens)', or the bare name where tokens are unknown."""
    return [f"{r} ({tokens_str(t)} tokens)" if t is not None else r for r, t in zip(f["revisions"], f["tokens"])]


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def heads_where(traj: pd.DataFrame, flag: str) -> dict[tuple[str, int], list[str]]:
    """(revision, layer) -> names of the heads with `flag` set (is_bos / is_induction), for hover text."""
    if flag not in traj:
        return {}
    hit = traj[traj[flag].astype(bool)]
    return {k: [head_name(r.layer, r.head) for r in g.itertuples()] for k, g in hit.groupby(["revision", "layer"])}


def max_head(f: dict, traj: pd.DataFrame) -> dict[str, str]:
    """revision -> the head with the highest induction selectivity (named in the max-selectivity hover)."""
    ind = f["signals"]["induction"]
    if ind not in traj:
        return {}
    best = traj.loc[traj.groupby("revision", sort=False)[ind].idxmax().dropna()]
    return {r.revision: head_name(r.layer, r.head) for r in best.itertuples()}


def trajectories(models: dict, axis: Axis) -> go.Figure:
    """Three stacked panels: BOS fraction, induction-circuit heads, max induction selectivity (log)."""
    first = next(iter(models.values()))[0]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[label(key, first) for key, _, _ in SERIES])
    for i, (name, (f, traj)) in enumerate(models.items()):
        x, names, best = axis.x(f), labels(f), max_head(f, traj)
        thr = f["thresholds"]["induction"]
        series = [(f["bos_fraction"], "BOS fraction %{y:.1%}", None),
                  (f["n_induction"], f"%{{y}} heads >= {thr:g}x", None),
                  (f["induction_max"], "max %{y:.1f}x at %{text}", [best.get(r, "?") for r in f["revisions"]])]
        for row, (y, what, text) in enumerate(series, start=1):
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=name, legendgroup=name, showlegend=row == 1,
                line={"color": color(i)}, customdata=names, text=text,
                hovertemplate=f"<b>{name}</b><br>%{{customdata}}<br>{what}<extra></extra>"), row=row, col=1)
        for key, row, y in (("bos_50", 1, f["bos_fraction"]), ("induction_3", 2, f["n_induction"])):
            m = f["milestones"].get(key)
            if m:  # a star where the model reaches the milestone
                j = f["revisions"].index(m["revision"])
                fig.add_trace(go.Scatter(
                    x=[x[j]], y=[y[j]], mode="markers", marker={"symbol": "star", "size": 15, "color": color(i)},
                    name=f"{name} {key}", legendgroup=name, showlegend=False,
                    hovertemplate=f"<b>{name}</b><br>{key} at {names[j]}<extra></extra>"), row=row, col=1)
    fig.add_hline(y=first["thresholds"]["induction"], line={"dash": "dot", "color": "grey"}, row=3, col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text=axis.title, row=3, col=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", row=3, col=1)
    fig.update_layout(height=820, margin={"t": 40}, hovermode="closest", legend={"title": "model"})
    return fig


def _fill(hex_color: str, alpha: float = 0.25) -> str:
    r, g, b = (int(hex_color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def seed_bands(families: dict[str, dict]) -> go.Figure:
    """The headline series of each family of seeds: the median over its seeds as a line, the min-max range as a
    shaded band, on the revisions all its seeds have (`harness.analysis.families`)."""
    first = next(iter(families.values()))
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[label(key, first) for key, _, _ in SERIES])
    positive = [x for fam in families.values() for x in fam["series"]["at"] if x]
    zero = min(positive) / 2 if positive else 0.5  # step 0 on the log axis, as Axis does
    for i, (family, fam) in enumerate(families.items()):
        band = fam["series"]
        x = [v if v > 0 else zero for v in band["at"]]
        when = [f"{tokens_str(v)} tokens" if band["x"] == "tokens" else f"step {v}" for v in band["at"]]
        name = f"{family} ({fam['n_seeds']} seeds)"
        for row, (key, _, _) in enumerate(SERIES, start=1):
            s = band[key]
            fig.add_trace(go.Scatter(x=x, y=s["max"], mode="lines", line={"width": 0}, legendgroup=family,
                                     showlegend=False, hoverinfo="skip", name=f"{family} max"), row=row, col=1)
            fig.add_trace(go.Scatter(x=x, y=s["min"], mode="lines", line={"width": 0}, fill="tonexty",
                                     fillcolor=_fill(color(i)), legendgroup=family, showlegend=False,
                                     hoverinfo="skip", name=f"{family} min-max"), row=row, col=1)
            fig.add_trace(go.Scatter(
                x=x, y=s["median"], mode="lines+markers", name=name, legendgroup=family, showlegend=row == 1,
                line={"color": color(i)}, customdata=list(zip(when, s["min"], s["max"])),
                hovertemplate=(f"<b>{family}</b><br>%{{customdata[0]}}<br>median %{{y:.3g}} "
                               "(range %{customdata[1]:.3g} - %{customdata[2]:.3g})<extra></extra>")), row=row, col=1)
    fig.add_hline(y=first["thresholds"]["induction"], line={"dash": "dot", "color": "grey"}, row=3, col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="training tokens (log)" if first["series"]["x"] == "tokens" else "training step (log)",
                     row=3, col=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", row=3, col=1)
    fig.update_layout(height=820, margin={"t": 40}, hovermode="closest", legend={"title": "family (median)"})
    return fig


def bos_layers(name: str, f: dict, traj: pd.DataFrame) -> go.Figure:
    """F1: BOS-classified heads per layer (rows) and revision (columns); hover names the heads."""
    counts = np.asarray(f["bos_layer_counts"], dtype=float).T  # layers x revisions
    heads = heads_where(traj, "is_bos")
    text = [[f"{lab}<br>layer {layer}: {int(counts[layer, j])} BOS heads"
             + (f"<br>{', '.join(heads[(r, layer)])}" if (r, layer) in heads else "")
             for j, (r, lab) in enumerate(zip(f["revisions"], labels(f)))] for layer in range(counts.shape[0])]
    fig = go.Figure(go.Heatmap(z=counts, x=f["revisions"], y=list(range(counts.shape[0])), text=text,
                               hovertemplate="%{text}<extra></extra>", zmin=0, zmax=f["n_heads"],
                               colorscale="Viridis", colorbar={"title": "BOS heads"}))
    free = ", ".join(map(str, f["bos_free_layers"])) or "none"
    fig.update_layout(title=f"{name}: BOS-classified heads per layer (BOS-free layers: {free})",
                      height=min(240 + 18 * counts.shape[0], 700), margin={"t": 50},
                      xaxis={"title": "revision (training order)", "type": "category"},
                      yaxis={"title": "layer", "dtick": 1})
    return fig


def recall(models: dict, axis: Axis) -> tuple[go.Figure, list[str]]:
    """F4: the fraction of the final induction circuit already found at each revision."""
    fig, notes = go.Figure(), []
    for i, (name, (f, traj)) in enumerate(models.items()):
        screen = f["early_screen"]
        final = screen["final_circuit"]
        if not final:
            notes.append(f"{name}: no induction-circuit head at the last revision, so no recall curve.")
            continue
        found = {r: [h for h in final if h in hs] for r, hs in _circuit_by_revision(traj).items()}
        custom = [[lab, ", ".join(found.get(r, [])) or "none"] for lab, r in zip(labels(f), f["revisions"])]
        fig.add_trace(go.Scatter(
            x=axis.x(f), y=screen["recall"], mode="lines+markers", name=name, line={"color": color(i)},
            customdata=custom, hovertemplate=(f"<b>{name}</b><br>%{{customdata[0]}}<br>recall %{{y:.2f}}: "
                                              f"%{{customdata[1]}} of {', '.join(final)}<extra></extra>")))
    for level in (1 / 3, 2 / 3, 1):
        fig.add_hline(y=level, line={"dash": "dot", "color": "grey"})
    fig.update_layout(height=380, margin={"t": 30}, xaxis={"type": "log", "title": axis.title},
                      yaxis={"title": "recall of the final circuit", "range": [-0.05, 1.05]}, legend={"title": "model"})
    return fig, notes


def _circuit_by_revision(traj: pd.DataFrame) -> dict[str, list[str]]:
    if "is_induction" not in traj:
        return {}
    hit = traj[traj["is_induction"].astype(bool)]
    return {r: [head_name(x.layer, x.head) for x in g.itertuples()] for r, g in hit.groupby("revision", sort=False)}


def pr_vs_induction(name: str, f: dict, traj: pd.DataFrame) -> go.Figure | None:
    """F5: each final-circuit head's path through (induction selectivity, PR) over revisions; None without PR."""
    final = f["early_screen"]["final_circuit"]
    IND, PR = f["signals"]["induction"], f["signals"].get("pr")
    if PR not in traj or not final:
        return None
    fig, verdicts = go.Figure(), f.get("pr_lead") or {}
    names = dict(zip(f["revisions"], labels(f)))
    for i, head in enumerate(final):
        layer, h = parse_head_name(head)
        rows = traj[(traj["layer"] == layer) & (traj["head"] == h)]
        verdict = verdicts.get(head, {}).get("verdict", "")
        fig.add_trace(go.Scatter(
            x=rows[IND], y=rows[PR], mode="lines+markers", name=f"{head} ({verdict})" if verdict else head,
            line={"color": color(i)}, customdata=[names.get(r, r) for r in rows["revision"]],
            hovertemplate=(f"<b>{name} {head}</b><br>%{{customdata}}<br>induction %{{x:.1f}}x<br>"
                           f"PR %{{y:.2f}}<extra></extra>")))
    fig.add_vline(x=f["thresholds"]["induction"], line={"dash": "dot", "color": "grey"})
    fig.update_layout(title=f"{name}: PR (effective rank) vs induction selectivity, final-circuit heads",
                      height=380, margin={"t": 50}, xaxis={"type": "log", "title": "induction selectivity (x, log)"},
                      yaxis={"title": f"PR ({PR})"}, legend={"title": "head (F5 verdict)"})
    return fig

