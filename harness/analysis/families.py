"""Seeds side by side: the models of one family (the `family` their results record) that differ in seed, grouped,
so that "when does the circuit form" gets an error bar. Pure functions of the members' findings, written beside
the model folders:

    <results_dir>/<experiment>/families/<family>.json   per milestone and the lag: median and range (min-max) over
                                                         the seeds, in steps and tokens; the headline series as a
                                                         band (median, min, max) over the revisions all seeds share

A milestone's median and range are over the seeds that reach it (`n_reached` of `n_seeds`); a family of one seed
is no family (nothing is written, the report looks as it does for single models).
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np

from harness.analysis.headline import SERIES
from harness.common.files import write_text

FOLDER = "families"


def group(findings: dict[str, dict]) -> dict[str, list[str]]:
    """family -> its models (two or more), in seed order; models without a family are left alone."""
    out: dict[str, list[str]] = {}
    for name, f in findings.items():
        if f.get("family") is not None:
            out.setdefault(f["family"], []).append(name)
    def order(model):  # seeds are ints (the zoo's, PolyPythia's) or names (data-seed, ...): ints first, in order
        seed = findings[model].get("seed")
        return (not isinstance(seed, int), seed if isinstance(seed, int) else 0, str(seed), model)

    return {fam: sorted(models, key=order) for fam, models in out.items() if len(models) >= 2}


def spread(values: list) -> dict | None:
    """Median and range of the known values, or None when there is none."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"median": statistics.median(known), "min": min(known), "max": max(known), "n": len(known)}


def milestone(key: str, members: dict[str, dict]) -> dict:
    at = {name: f["milestones"].get(key) for name, f in members.items()}
    reached = [m for m in at.values() if m]
    return {"n_seeds": len(members), "n_reached": len(reached),
            "steps": spread([m["step"] for m in reached]),
            # a median of tokens only where every seed that reaches it knows them
            "tokens": spread([m["tokens"] for m in reached]) if all(m["tokens"] is not None for m in reached) else None,
            "per_seed": {name: m and {"seed": members[name].get("seed"), "revision": m["revision"], "step": m["step"],
                                      "tokens": m["tokens"]} for name, m in at.items()}}


def band(members: dict[str, dict]) -> dict:
    """The headline series over the x values (tokens, else steps) that every seed has: median, min, max each."""
    fs = list(members.values())
    key = "tokens" if all(t is not None for f in fs for t in f["tokens"]) else "steps"
    common = sorted(set.intersection(*(set(f[key]) for f in fs)))
    out = {"x": key, "at": common}
    for series, _, _ in SERIES:
        rows = [[dict(zip(f[key], f[series]))[x] for f in fs] for x in common]
        out[series] = {"median": [statistics.median(r) for r in rows], "min": [min(r) for r in rows],
                       "max": [max(r) for r in rows]}
    return out


def summarize(family: str, members: dict[str, dict]) -> dict:
    """One family's findings from its members' (model name -> findings), in seed order."""
    first = next(iter(members.values()))
    keys: list[str] = []
    for f in members.values():
        keys += [k for k in f["milestones"] if k not in keys]
    return {"family": family, "models": list(members), "seeds": [f.get("seed") for f in members.values()],
            "n_seeds": len(members), "milestones": {k: milestone(k, members) for k in keys},
            "lag": spread([f.get("lag") for f in members.values()]), "series": band(members),
            "thresholds": first.get("thresholds", {}), "rules": first.get("rules", {})}


def file_name(family: str) -> str:
    """A family name as a file name (families are labels and may hold a slash, e.g. an org/ prefix)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", family) + ".json"


def analyze_families(experiment_dir: Path, findings: dict[str, dict]) -> dict[str, dict]:
    """family -> its findings for every family of two or more of `findings`' models; each written to
    <experiment_dir>/families/<family>.json."""
    out = {}
    for family, models in group(findings).items():
        out[family] = fam = summarize(family, {m: findings[m] for m in models})
        # atomic: parallel jobs of one multirun may write their family at once
        write_text(Path(experiment_dir) / FOLDER / file_name(family), json.dumps(fam, indent=2, default=_plain))
    return out


def _plain(o):  # findings fresh from analyze_model may hold numpy scalars
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def family_of(experiment_dir: Path, model: str) -> dict | None:
    """The family of `model` from the findings.json of every model of its experiment (written as above), or None
    when it has no family of two or more analysed seeds yet: what a job calls once its model is analysed."""
    found = {}
    for path in sorted(Path(experiment_dir).glob("*/findings.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError:  # a half-written file of a job that is analysing now: that one writes the family
            continue
    family = found.get(model, {}).get("family")
    if family is None:
        return None
    return analyze_families(experiment_dir, {m: f for m, f in found.items() if f.get("family") == family}).get(family)
