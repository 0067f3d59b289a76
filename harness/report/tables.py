"""The report's tables as plain rows of strings: the HTML page and the W&B report render the same rows."""
from __future__ import annotations

from harness.analysis.words import at_str, lag_str, shape_str, tokens_str


def milestone_table(models: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """One row per model: every milestone (in the findings' own order, so configured thresholds show) + lag."""
    keys: list[str] = []
    for f in models.values():
        keys += [k for k in f["milestones"] if k not in keys]
    header = ["model", *keys, "lag (bos_50 / induction_3)"]
    rows = [[name, *(at_str(f["milestones"].get(k)) for k in keys), lag_str(f.get("lag"))]
            for name, f in models.items()]
    return header, rows


def _number(v) -> str:
    """A step or a median of steps: 143000, 6.5 (a median of two)."""
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def family_table(families: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """One row per family and milestone (and the lag): median and range over the seeds that reach it, in tokens
    and steps, and how many of the family's seeds do."""
    header = ["family", "milestone", "median (tokens)", "range (tokens)", "median (step)", "range (step)",
              "seeds reaching it"]
    rows = []
    for family, fam in families.items():
        for key, m in fam["milestones"].items():
            tok, step = m["tokens"], m["steps"]
            unknown = "never" if step is None else "?"  # reached, but some seed's tokens are not known
            rows.append([family, key, tokens_str(tok["median"]) if tok else unknown,
                         f"{tokens_str(tok['min'])} - {tokens_str(tok['max'])}" if tok else "-",
                         _number(step["median"]) if step else "never",
                         f"{_number(step['min'])} - {_number(step['max'])}" if step else "-",
                         f"{m['n_reached']} of {m['n_seeds']}"])
        lag = fam.get("lag")
        rows.append([family, "lag (bos_50 / induction_3)", lag_str(lag and lag["median"]),
                     f"{lag_str(lag['min'])} - {lag_str(lag['max'])}" if lag else "-", "-", "-",
                     f"{lag['n'] if lag else 0} of {fam['n_seeds']}"])
    return header, rows


def verdict_table(models: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """One row per model: the F1-F5 verdicts in a word or two each."""
    header = ["model", "BOS shape (F2)", "induction shape", "lag (F3)", "BOS-free layers (F1)",
              "final circuit", "screen 2/3 (F4)", "PR lead (F5)"]
    rows = []
    for name, f in models.items():
        screen = f["early_screen"]
        two_thirds = (screen.get("first_at") or {}).get("2/3")
        frac = f" = {two_thirds['token_fraction']:.2%}" if two_thirds and two_thirds.get("token_fraction") else ""
        pr = f.get("pr_lead")
        rows.append([name, shape_str(f["bos_shape"]), shape_str(f["induction_shape"]), lag_str(f.get("lag")),
                     ", ".join(map(str, f["bos_free_layers"])) or "none",
                     ", ".join(screen["final_circuit"]) or "none", at_str(two_thirds) + frac,
                     "not measured" if pr is None else ", ".join(f"{h} {v['verdict']}" for h, v in pr.items()) or "-"])
    return header, rows


def layer_table(f: dict) -> tuple[list[str], list[list[str]]]:
    """F1 as text: one row per layer, one column per revision, the number of BOS-classified heads."""
    counts = f["bos_layer_counts"]  # revisions x layers
    header = ["layer", *f["revisions"]]
    rows = [[str(layer), *(str(int(c[layer])) for c in counts)] for layer in range(f["n_layers"])]
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])
