"""One model's findings (docs/method.md section 4) from its folder of the result store, written beside it.

    <model_dir>/trajectory.parquet    one row per (revision, layer, head): every metric + is_bos, is_induction
    <model_dir>/heads_events.parquet  per head and class: the first revision at which it crossed its threshold
    <model_dir>/findings.json         milestones, lag, F1-F5 verdicts, one sentence per finding, the rules used
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import load
from harness.analysis import rules as R
from harness.analysis.words import summary
from harness.common import files
from harness.common.heads import head_name

NEEDED = ("induction", "first_token")  # the signals every finding rests on (the selectivity screen declares them)


PROVISIONAL = ("bos_free_layers", "bos_shape", "induction_shape", "early_screen", "pr_lead")  # F1, F2, F4, F5


def analyze_model(model_dir: Path, rules: R.Rules = R.Rules(), provisional: bool = False) -> dict:
    """Findings over the stored revisions. `provisional`: training goes on (a live run), so the findings that
    depend on the last revision (F1, F2, F4, F5) may still change; milestones and the lag (F3) are final once
    reached."""
    model_dir = Path(model_dir)
    t = load.trajectory(model_dir)
    df, revs, skipped, signals, thr = t.frame, t.revisions, t.skipped, t.signals, t.thresholds
    missing = [s for s in NEEDED if signals.get(s) not in df]
    if missing:
        what = [f"{s} (column {signals[s]})" if s in signals else f"{s} (no probe declares it)" for s in missing]
        raise load.AnalysisError(f"{model_dir}: the store has no {', '.join(what)}; run probe=selectivity")
    IND, FIRST, PREV, PR = (signals.get(s) for s in ("induction", "first_token", "previous_token", "pr"))
    L, H = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    order = {r.name: i for i, r in enumerate(revs)}
    df = df.sort_values(["revision", "layer", "head"], key=lambda s: s.map(order) if s.name == "revision" else s)
    df = df.reset_index(drop=True)

    def cube(col):  # (R, L, H)
        return df[col].to_numpy(dtype=float).reshape(len(revs), L, H)

    ind, first_tok = cube(IND), cube(FIRST)
    bos, circuit = first_tok >= thr["bos"], ind >= thr["induction"]
    df["is_bos"], df["is_induction"] = bos.ravel(), circuit.ravel()
    names = [r.name for r in revs]
    tokens = [r.tokens for r in revs]
    bos_fraction = bos.mean(axis=(1, 2)).tolist()
    n_induction = circuit.sum(axis=(1, 2)).tolist()

    def at(i):  # a revision as findings report it
        return None if i is None else {"revision": names[i], "step": revs[i].step, "tokens": tokens[i]}

    miles = R.milestones(n_induction, bos_fraction, rules)
    lag = R.lag(*(tokens[miles[k]] if miles.get(k) is not None else None for k in ("bos_50", "induction_3")))
    bos_shape, ind_shape = R.shape(bos_fraction, rules.sharp_share), R.shape(n_induction, rules.sharp_share)
    for s in (bos_shape, ind_shape):
        s["between"] = s["between"] and [names[i] for i in s["between"]]
    recall, reached = R.early_screen(circuit, rules.recall)
    final = [head_name(*lh) for lh in zip(*np.nonzero(circuit[-1]))]
    last_tokens = tokens[-1]

    def screen_at(i):
        if i is None:
            return None
        frac = tokens[i] / last_tokens if tokens[i] is not None and last_tokens else None
        return {"revision": names[i], "tokens": tokens[i], "token_fraction": frac}

    roles = {IND: "induction", FIRST: "first_token", PREV: "previous_token"}
    thresholds = {IND: thr["induction"], FIRST: thr["bos"]} | ({PREV: thr["prev_token"]} if PREV in df else {})
    events = pd.DataFrame([
        {"class": roles[cls], "layer": layer, "head": head, "name": head_name(layer, head),
         "revision": names[i], "step": revs[i].step, "tokens": tokens[i]}
        for cls, layer, head, i in R.head_events({c: cube(c) for c in thresholds}, thresholds)
    ], columns=["class", "layer", "head", "name", "revision", "step", "tokens"])
    findings = {
        "model": model_dir.name, "family": t.family, "seed": t.seed,  # seeds of one family: analysis.families
        "revisions": names, "steps": [r.step for r in revs], "tokens": tokens, "skipped": skipped, "n_layers": L,
        "n_heads": H,
        "bos_fraction": bos_fraction, "n_induction": n_induction, "induction_max": np.nanmax(ind, (1, 2)).tolist(),
        "bos_layer_counts": bos.sum(axis=2).tolist(),
        "milestones": {k: at(i) for k, i in miles.items()},
        "lag": lag,
        "bos_free_layers": R.bos_free_layers(bos),
        "bos_shape": bos_shape, "induction_shape": ind_shape,
        "early_screen": {"final_circuit": final, "recall": recall, "first_at": {k: screen_at(i) for k, i in reached.items()}},
        "head_events": events.to_dict("records"),
        "rules": rules.as_dict(), "thresholds": thr, "signals": signals,
    }
    if PR in df:
        leads = R.pr_lead(ind, cube(PR), thr["induction"], rules.pr_factor)
        findings["pr_lead"] = {
            head_name(*lh): {**v, "crossing": names[v["crossing"]],
                             "pr_rise": None if v["pr_rise"] is None else names[v["pr_rise"]]}
            for lh, v in leads.items()}
    findings["status"] = "provisional" if provisional else "final"
    findings["provisional"] = [k for k in PROVISIONAL if k in findings] if provisional else []
    findings["summary"] = summary(findings)
    # Atomic: a live run rewrites these after every probe while a report may be reading them.
    files.atomic_write(model_dir / "trajectory.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    files.atomic_write(model_dir / "heads_events.parquet", lambda tmp: events.to_parquet(tmp, index=False))
    files.write_text(model_dir / "findings.json", json.dumps(findings, indent=2, default=_json))
    return findings


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    if o is pd.NA:
        return None
    raise TypeError(f"not JSON serialisable: {type(o)}")


def model_dirs(results_dir, experiment: str, models=None) -> list[Path]:
    """The model folders of an experiment (those holding revision results), or the named ones."""
    root = Path(results_dir) / experiment
    found = sorted(p for p in root.glob("*") if p.is_dir() and any(p.glob("*/summary.json")))
    if models:
        unknown = sorted(set(models) - {p.name for p in found})
        if unknown:
            raise load.AnalysisError(f"no results for {', '.join(unknown)} in {root} "
                                     f"(models there: {', '.join(p.name for p in found) or 'none'})")
        found = [p for p in found if p.name in set(models)]
    if not found:
        there = sorted(p.parent.parent.parent.name for p in Path(results_dir).glob("*/*/*/summary.json"))
        raise load.AnalysisError(f"no results in {root} (experiments in {results_dir}: "
                                 f"{', '.join(sorted(set(there))) or 'none'})")
    return found


def analyze_experiment(results_dir, experiment: str, models=None, rules: R.Rules = R.Rules()) -> dict[str, dict]:
    return {d.name: analyze_model(d, rules) for d in model_dirs(results_dir, experiment, models)}


def load_findings(model_dir: Path) -> tuple[dict, pd.DataFrame]:
    model_dir = Path(model_dir)
    return json.loads((model_dir / "findings.json").read_text()), pd.read_parquet(model_dir / "trajectory.parquet")
