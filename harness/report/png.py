"""A model's trajectory as a PNG: its findings' per-revision series against training tokens (or steps); a family's
as a band over its seeds."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.analysis.families import FOLDER, file_name  # noqa: E402
from harness.analysis.headline import SERIES, label  # noqa: E402


def trajectory(model_dir: Path, findings: dict) -> Path | None:
    """trajectory.png beside findings.json: the same revisions (in order, duplicates left out) as the analysis."""
    by_tokens = all(t is not None for t in findings["tokens"])
    x = findings["tokens"] if by_tokens else findings["steps"]
    if len(x) < 2:
        return None
    x = [max(v, 1) for v in x]  # step 0 drawn at 1 on the log axis
    fig, axes = plt.subplots(1, len(SERIES), figsize=(4.2 * len(SERIES), 3.2), squeeze=False)
    for ax, (key, _, logy) in zip(axes[0], SERIES):
        ax.plot(x, findings[key], marker="o")
        ax.set_xscale("log")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel("training tokens" if by_tokens else "training step")
        ax.set_title(label(key, findings), fontsize=9)
        if key == "induction_max":
            ax.axhline(findings["thresholds"]["induction"], color="grey", ls="--", lw=0.8)
    fig.suptitle(findings["model"])
    fig.tight_layout()
    out = Path(model_dir) / "trajectory.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def family(experiment_dir: Path, fam: dict) -> Path | None:
    """families/<family>.png beside the family's findings: each headline series' median over the seeds, the
    min-max range shaded, on the revisions every seed has."""
    band = fam["series"]
    if len(band["at"]) < 2:
        return None
    x = [max(v, 1) for v in band["at"]]
    fig, axes = plt.subplots(1, len(SERIES), figsize=(4.2 * len(SERIES), 3.2), squeeze=False)
    for ax, (key, _, logy) in zip(axes[0], SERIES):
        s = band[key]
        ax.fill_between(x, s["min"], s["max"], alpha=0.3, lw=0, label="min-max")
        ax.plot(x, s["median"], marker="o", label="median")
        ax.set_xscale("log")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel("training tokens" if band["x"] == "tokens" else "training step")
        ax.set_title(label(key, fam), fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{fam['family']}: {fam['n_seeds']} seeds ({', '.join(map(str, fam['seeds']))})")
    fig.tight_layout()
    out = (Path(experiment_dir) / FOLDER / file_name(fam["family"])).with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
