"""Trajectory plots from the result store: scalar metrics against training tokens."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (  # (metric, label, log y)
    ("selectivity.induction_max", "max induction selectivity (x)", True),
    ("selectivity.n_induction", "induction-circuit heads (>= 50x)", False),
    ("selectivity.bos_fraction", "BOS-classified fraction", False),
)


def trajectory(model_dir: Path) -> Path | None:
    """Plot every revision summary under <results>/<experiment>/<model>/ into trajectory.png."""
    rows, xlabel = [], "training tokens"
    for f in sorted(Path(model_dir).glob("*/summary.json")):
        s = json.loads(f.read_text())
        if s.get("status") == "failed":  # no numbers (see store.failed)
            continue
        rows.append((s["provenance"].get("tokens"), s["provenance"].get("step"), s["scalars"]))
    if any(t is None for t, _, _ in rows):  # e.g. local checkpoints without tokens_per_step
        rows, xlabel = [(st, None, s) for _, st, s in rows], "training step"
    rows = sorted(((x, s) for x, _, s in rows if x is not None), key=lambda r: r[0])
    panels = [p for p in PANELS if any(p[0] in s for _, s in rows)]
    if len(rows) < 2 or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (key, label, logy) in zip(axes[0], panels):
        pts = [(max(x, 1), s[key]) for x, s in rows if key in s]  # step 0 drawn at 1 on the log axis
        ax.plot(*zip(*pts), marker="o")
        ax.set_xscale("log")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel(xlabel)
        ax.set_title(label, fontsize=9)
    if any(k == "selectivity.induction_max" for k, *_ in panels):
        axes[0][0].axhline(50, color="grey", ls="--", lw=0.8)
    fig.suptitle(Path(model_dir).name)
    fig.tight_layout()
    out = Path(model_dir) / "trajectory.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
