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
    rows = []
    for f in sorted(Path(model_dir).glob("*/summary.json")):
        s = json.loads(f.read_text())
        rows.append((s["provenance"].get("tokens"), s["scalars"]))
    rows = sorted((t, s) for t, s in rows if t is not None)
    panels = [p for p in PANELS if any(p[0] in s for _, s in rows)]
    if len(rows) < 2 or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (key, label, logy) in zip(axes[0], panels):
        pts = [(max(t, 1), s[key]) for t, s in rows if key in s]
        ax.plot(*zip(*pts), marker="o")
        ax.set_xscale("log")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel("training tokens")
        ax.set_title(label, fontsize=9)
    if any(k == "selectivity.induction_max" for k, *_ in panels):
        axes[0][0].axhline(50, color="grey", ls="--", lw=0.8)
    fig.suptitle(Path(model_dir).name)
    fig.tight_layout()
    out = Path(model_dir) / "trajectory.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
