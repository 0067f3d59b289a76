"""A model's trajectory as a PNG: its findings' per-revision series against training tokens (or steps)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (  # (findings series, label, log y)
    ("induction_max", "max induction selectivity (x)", True),
    ("n_induction", "induction-circuit heads (>= 50x)", False),
    ("bos_fraction", "BOS-classified fraction", False),
)


def trajectory(model_dir: Path, findings: dict) -> Path | None:
    """trajectory.png beside findings.json: the same revisions (in order, duplicates left out) as the analysis."""
    by_tokens = all(t is not None for t in findings["tokens"])
    x = findings["tokens"] if by_tokens else findings["steps"]
    if len(x) < 2:
        return None
    x = [max(v, 1) for v in x]  # step 0 drawn at 1 on the log axis
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.2), squeeze=False)
    for ax, (key, label, logy) in zip(axes[0], PANELS):
        ax.plot(x, findings[key], marker="o")
        ax.set_xscale("log")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel("training tokens" if by_tokens else "training step")
        ax.set_title(label, fontsize=9)
    axes[0][0].axhline(findings["rules"]["induction"], color="grey", ls="--", lw=0.8)
    fig.suptitle(findings["model"])
    fig.tight_layout()
    out = Path(model_dir) / "trajectory.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
