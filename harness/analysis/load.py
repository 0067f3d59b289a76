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
        elif prov.get("duplicate_of"):
            skipped.append(f"{name} (duplicate of {prov['duplicate_of']})")
        else:
            kept.append(Revision(name, int(prov["step"]), prov.get("tokens"), f.parent))
    by_tokens = all(r.tokens is not None for r in kept)
    kept.sort(key=lambda r: (r.tokens if by_tokens else r.step, r.step))
    return kept, skipped


def trajectory(model_dir: Path) -> tuple[pd.DataFrame, list[Revision], list[str]]:
    """(frame with revision, step, tokens, layer, head + every metric column; revisions in order; skipped)."""
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
    return df, revs, skipped
