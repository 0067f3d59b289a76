"""The study's findings as numeric rules (docs/method.md section 4): pure functions of per-revision arrays.

Arrays are ordered by revision (training tokens); per-head arrays have shape (revisions, layers, heads).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from omegaconf import OmegaConf


@dataclass(frozen=True)
class Rules:
    """Parameters of the findings (defaults: docs/method.md section 4); conf/analysis/default.yaml sets them. The
    head-class thresholds are not here: each result records those its probes applied (see load.trajectory)."""

    induction_counts: tuple = (3, 5)  # milestones induction_3, induction_5
    bos_fractions: tuple = (0.10, 0.30, 0.50, 0.70)  # milestones bos_10 ... bos_70
    sharp_share: float = 0.5  # F2: "sharp" when the largest step is >= this share of the rise
    pr_factor: float = 2.0  # F5: PR rise = first revision with PR >= pr_factor x its first-revision PR
    recall: tuple = ("1/3", "2/3", "1")  # F4: recall levels reported

    @classmethod
    def from_config(cls, cfg) -> Rules:
        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in dict(cfg or {}).items()})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def first(mask) -> int | None:
    """Index of the first True, or None."""
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if len(hits) else None


def milestones(n_induction, bos_fraction, rules: Rules) -> dict[str, int | None]:
    """First revision index with >= k induction-circuit heads / a BOS fraction >= f."""
    out = {f"induction_{k}": first(np.asarray(n_induction) >= k) for k in rules.induction_counts}
    out |= {f"bos_{round(f * 100)}": first(np.asarray(bos_fraction) >= f) for f in rules.bos_fractions}
    return out


def shape(series, sharp_share: float = 0.5) -> dict:
    """F2: rise = max - first value; share = largest increase between adjacent revisions / rise."""
    f = np.asarray(series, dtype=float)
    rise = float(f.max() - f[0]) if len(f) else 0.0
    if len(f) < 2 or not rise > 0:
        return {"verdict": "none", "largest_step_share": None, "between": None, "rise": 0.0}
    steps = np.diff(f)
    i = int(np.argmax(steps))  # the first of equal largest steps
    share = float(steps[i] / rise)
    return {"verdict": "sharp" if share >= sharp_share else "gradual", "largest_step_share": share,
            "between": [i, i + 1], "rise": rise}


def lag(tokens_late, tokens_early) -> float | None:
    """F3: tokens at the later milestone / tokens at the earlier one."""
    if tokens_late is None or not tokens_early:
        return None
    return float(tokens_late) / float(tokens_early)


def bos_free_layers(bos) -> list[int]:
    """F1: layers with no BOS-classified head at any revision. `bos`: (R, L, H) bool."""
    return [int(layer) for layer in np.flatnonzero(~np.asarray(bos).any(axis=(0, 2)))]


def early_screen(circuit, levels=("1/3", "2/3", "1")) -> tuple[list[float | None], dict[str, int | None]]:
    """F4: recall(r) = |circuit(r) & final| / |final|; the first revision reaching each level.

    `circuit`: (R, L, H) bool. With an empty final circuit recall is undefined (None) and nothing is reached.
    """
    circuit = np.asarray(circuit, dtype=bool)
    final = circuit[-1]
    size = int(final.sum())
    if size == 0:
        return [None] * len(circuit), dict.fromkeys(levels)
    hits = (circuit & final).sum(axis=(1, 2))
    recall = [float(h / size) for h in hits]
    # exact fractions: 2 of 3 heads reaches "2/3" whatever the float rounding
    reached = {lv: first([Fraction(int(h), size) >= Fraction(lv) for h in hits]) for lv in levels}
    return recall, reached


def pr_lead(induction, pr, threshold: float, factor: float = 2.0) -> dict[tuple[int, int], dict]:
    """F5 for each head of the final circuit: crossing index, PR-rise index, lead = crossing - rise, verdict.

    `induction`, `pr`: (R, L, H). Verdict: "undetermined" when the head crosses at the first revision, "no_rise"
    when its PR never reaches factor x its first-revision PR, else "lead" (> 0), "same" (0) or "lag" (< 0).
    """
    induction, pr = np.asarray(induction, dtype=float), np.asarray(pr, dtype=float)
    out = {}
    for layer, head in zip(*np.nonzero(induction[-1] >= threshold)):
        cross = first(induction[:, layer, head] >= threshold)
        rise = first(pr[:, layer, head] >= factor * pr[0, layer, head])
        if cross == 0:
            verdict, lead = "undetermined", None
        elif rise is None:
            verdict, lead = "no_rise", None
        else:
            lead = cross - rise
            verdict = "lead" if lead > 0 else "same" if lead == 0 else "lag"
        out[(int(layer), int(head))] = {"crossing": cross, "pr_rise": rise, "lead_revisions": lead, "verdict": verdict}
    return out


def head_events(values: dict[str, np.ndarray], thresholds: dict[str, float]) -> list[tuple[str, int, int, int]]:
    """(class, layer, head, first revision index) for every head that ever reaches its class threshold."""
    events = []
    for cls, thr in thresholds.items():
        v = np.asarray(values[cls], dtype=float)  # (R, L, H); NaN never crosses
        for layer, head in zip(*np.nonzero((v >= thr).any(axis=0))):
            events.append((cls, int(layer), int(head), first(v[:, layer, head] >= thr)))
    return events
