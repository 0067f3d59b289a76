"""Read one model's folder of the result store into a trajectory: one row per (revision, layer, head).

Reads only the store's files (`<revision>/summary.json`, `<revision>/heads.parquet`), so it works on any store
with this schema, wherever it was written. Revisions: those with a summary.json and a known step, not marked
as a duplicate of another revision, ordered by training tokens (by step where any token count is unknown).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.common.errors import HarnessError


class AnalysisError(HarnessError, ValueError):
    """A model folder that cannot be analysed (no revisions, missing columns)."""


@dataclass
class Trajectory:
    """One model's results in training order: the per-head frame, the revisions, those left out, and what the
    probes declared (the columns with a standard role, the thresholds they classified heads with)."""

    frame: pd.DataFrame
    revisions: list
    skipped: list[str]
    signals: dict[str, str]
    thresholds: dict[str, float]
    family: str | None = None  # models of one family that differ in seed are grouped (analysis.families)
    seed: int | str | None = None


@dataclass
class Revision:
    name: str
    step: int
    tokens: int | None
    folder: Path


def revisions(model_dir: Path) -> tuple[list[Revision], list[str]]:
    """(the revisions to analyse in order, the names left out with the reason)."""
    kept, skipped = [], []
    for f in sorted(Path(model_dir).glob("*/summary.json")):
        s = json.loads(f.read_text())
        prov = s.get("provenance", {})
        name = prov.get("revision") or f.parent.name
        if s.get("status") == "failed":
            skipped.append(f"{name} (failed: {s.get('reason')}; try {s.get('suggestion')})")
        elif prov.get("step") is None:
            skipped.append(f"{name} (no step)")  # e.g. an annealed `main`
        elif prov.get("superseded") is not None:
            skipped.append(f"{name} (superseded: training resumed from step {prov['superseded']})")
        elif prov.get("duplicate_of"):
            skipped.append(f"{name} (duplicate of {prov['duplicate_of']})")
        else:
            kept.append(Revision(name, int(prov["step"]), prov.get("tokens"), f.parent))
    by_tokens = all(r.tokens is not None for r in kept)
    kept.sort(key=lambda r: (r.tokens if by_tokens else r.step, r.step))
    return kept, skipped


def declared(revs: list[Revision], model_dir: Path) -> tuple[dict, dict]:
    """The signals and thresholds every revision recorded; revisions probed under different thresholds cannot
    share one trajectory (the job reprobes them under the current config)."""
    seen = {}
    for r in revs:
        s = json.loads((r.folder / "summary.json").read_text())
        if "signals" not in s:
            raise AnalysisError(f"{r.folder}: a result of an older harness (no declared signals); run the job "
                                "again to recompute it")
        key = json.dumps([s["signals"], s.get("thresholds") or {}], sort_keys=True)
        seen.setdefault(key, []).append(r.name)
    if len(seen) > 1:
        groups = "; ".join(f"{', '.join(names[:3])}: {json.loads(k)[1]}" for k, names in seen.items())
        raise AnalysisError(f"{model_dir}: revisions were probed with different thresholds ({groups}); probe them "
                            "again under one config (the job recomputes them)")
    signals, thresholds = json.loads(next(iter(seen)))
    return signals, thresholds


def labels(revs: list[Revision]) -> tuple:
    """(family, seed) as the revisions' provenance records them; the last revision's where they differ (a
    result probed under an older preset, relabelled by the next job that completes the grid)."""
    found = (None, None)
    for r in revs:
        prov = json.loads((r.folder / "summary.json").read_text()).get("provenance", {})
        if prov.get("family") is not None:
            found = (prov["family"], prov.get("seed"))
    return found


def trajectory(model_dir: Path) -> Trajectory:
    """Frame with revision, step, tokens, layer, head + every metric column; revisions in order; skipped;
    the declared signals and thresholds."""
    revs, skipped = revisions(model_dir)
    if not revs:
        raise AnalysisError(f"{model_dir}: no revision with a summary.json and a known step"
                            + (f" (left out: {', '.join(skipped)})" if skipped else ""))
    frames = []
    for r in revs:
        heads = pd.read_parquet(r.folder / "heads.parquet")
        frames.append(heads.assign(revision=r.name, step=r.step, tokens=r.tokens))
    df = pd.concat(frames, ignore_index=True)
    first = ["revision", "step", "tokens", "layer", "head"]
    df = df[first + [c for c in df.columns if c not in first]]
    df["tokens"] = df["tokens"].astype("Int64")  # nullable: local checkpoints may lack token counts
    return Trajectory(df, revs, skipped, *declared(revs, model_dir), *labels(revs))
