"""What a job's W&B run gets from its model's findings (Tracker.log_findings), and the keys the W&B report
(harness.report.wandb_report) shows from it. Plain data, no wandb import; it lives below both, so the tracker
does not import the report."""
from __future__ import annotations

from harness.analysis.words import lag_str, shape_str  # the report's wording: both read the same

TABLE, TRAJECTORY, BOS_LAYERS = "findings", "trajectory", "findings/bos_layers"  # history keys
COLUMNS = ["finding", "value", "revision", "tokens"]


def summary_values(f: dict) -> dict:
    """Run-summary values of the findings, under `findings/` (one W&B section); None where not reached."""
    out = {"findings/lag": f.get("lag"), "findings/bos_free_layers": list(f.get("bos_free_layers", [])),
           "findings/final_circuit": ", ".join(f["early_screen"]["final_circuit"]),
           "findings/summary": "\n".join(f.get("summary", []))}
    for key, m in f["milestones"].items():
        out[f"findings/{key}_tokens"] = m and m.get("tokens")
        out[f"findings/{key}_revision"] = m and m["revision"]
    for shape in ("bos_shape", "induction_shape"):
        out[f"findings/{shape}"] = f[shape]["verdict"]
        out[f"findings/{shape}_share"] = f[shape].get("largest_step_share")
    for level, at in (f["early_screen"].get("first_at") or {}).items():  # "2/3" -> "screen_2of3_..."
        out[f"findings/screen_{level.replace('/', 'of')}_token_fraction"] = at and at.get("token_fraction")
    for head, v in (f.get("pr_lead") or {}).items():
        out[f"findings/pr_lead_{head}"] = v["verdict"]
    return out


def table_rows(f: dict) -> list[list]:
    """One row per finding: [finding, value in words, revision, tokens]."""
    rows = [[key, "reached" if m else "never", m["revision"] if m else "", m.get("tokens") if m else None]
            for key, m in f["milestones"].items()]
    rows.append(["lag", lag_str(f.get("lag")), "", None])
    for shape in ("bos_shape", "induction_shape"):
        between = f[shape].get("between")
        rows.append([shape, shape_str(f[shape]), " -> ".join(between) if between else "", None])
    rows.append(["bos_free_layers", ", ".join(map(str, f.get("bos_free_layers", []))) or "none", "", None])
    screen = f["early_screen"]
    rows.append(["final_circuit", ", ".join(screen["final_circuit"]) or "none", "", None])
    for level, at in (screen.get("first_at") or {}).items():
        frac = at and at.get("token_fraction")
        rows.append([f"screen {level}", "never" if not at else f"{frac:.2%} of tokens" if frac is not None
                     else "reached", at["revision"] if at else "", at.get("tokens") if at else None])
    for head, v in (f.get("pr_lead") or {}).items():
        rows.append([f"pr_lead {head}", v["verdict"], v.get("crossing") or "", None])
    rows += [["summary", sentence, "", None] for sentence in f.get("summary", [])]
    return rows
