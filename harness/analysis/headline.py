"""The three headline series of a model's trajectory, as every view shows them (the PNG beside the findings, the
HTML report, the W&B report): findings key, the signal a probe declares for its per-revision scalar, label, log y."""
from __future__ import annotations

SERIES = (  # (findings key, label, log y)
    ("bos_fraction", "BOS-classified fraction of heads", False),
    ("n_induction", "induction-circuit heads", False),
    ("induction_max", "max induction selectivity (x)", True),
)


def label(key: str, findings: dict) -> str:
    """The series' label, with the threshold the heads were classified by where it has one."""
    text = dict((k, lab) for k, lab, _ in SERIES)[key]
    thr = findings.get("thresholds", {})
    if key == "n_induction" and "induction" in thr:
        return f"{text} (>= {thr['induction']:g}x)"
    if key == "bos_fraction" and "bos" in thr:
        return f"{text} (first-token >= {thr['bos']:g}x)"
    return text
