"""The findings in words: one sentence per model and finding, for the report and the W&B summary."""
from __future__ import annotations


def tokens_str(t) -> str:
    """6291456000 -> '6.3B', 23068672000 -> '23B', 4096000 -> '4.1M'."""
    if t is None:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if t >= div:
            v = t / div
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return str(int(t))


NEVER = "never"


def at_str(m: dict | None) -> str:
    """A milestone or screen point: '23B (step11000)', 'step 40 (step40)' without tokens, 'never'."""
    if not m:
        return NEVER
    when = tokens_str(m["tokens"]) if m.get("tokens") is not None else f"step {m.get('step', '?')}"
    return f"{when} ({m['revision']})"


def lag_str(lag) -> str:
    return "-" if lag is None else f"{lag:.1f}x"


def shape_str(s: dict | None) -> str:
    """F2 verdict with its share: 'sharp (0.78)', 'gradual (0.32)', 'none'."""
    if not s or s.get("verdict") in (None, "none"):
        return "none"
    return f"{s['verdict']} ({s['largest_step_share']:.2f})"


def _when(f: dict, i: int) -> str:
    t = f["tokens"][i]
    return f"{tokens_str(t)} tokens" if t is not None else f"step {f['steps'][i]}"


def _mile(f: dict, key: str) -> str:
    m = f["milestones"].get(key)
    return (f"{tokens_str(m['tokens'])}" if m["tokens"] is not None else f"step {m['step']}") if m else ""


def summary(f: dict) -> list[str]:
    """Sentences: the BOS fraction's shape (F2), the induction circuit and the lag (F3), F1, F4, F5."""
    name, frac, idx = f["model"], f["bos_fraction"], {r: i for i, r in enumerate(f["revisions"])}
    s = f["bos_shape"]
    if s["verdict"] == "none":
        bos = ("no BOS-classified head at any revision" if max(frac) == 0
               else f"the BOS fraction never rises above its first value ({frac[0]:.0%})")
    else:
        a, b = (idx[r] for r in s["between"])
        wa, wb = _when(f, a), _when(f, b)
        if wa == wb:  # adjacent revisions that round to the same token count: name them
            wa, wb = f"{wa} ({f['revisions'][a]})", f"{wb} ({f['revisions'][b]})"
        step = f"from {frac[a]:.0%} to {frac[b]:.0%} between {wa} and {wb}"
        bos = (f"the BOS fraction jumps {step} (sharp, share {s['largest_step_share']:.2f})" if s["verdict"] == "sharp"
               else f"the BOS fraction rises gradually from {frac[0]:.0%} to {max(frac):.0%}; its largest step is "
                    f"{step} (share {s['largest_step_share']:.2f})")
    k = f["rules"]["induction_counts"][0]
    if f["milestones"].get(f"induction_{k}"):
        ind = f"induction circuit ({k} heads >= {f['thresholds']['induction']:g}x) at {_mile(f, f'induction_{k}')}"
    elif max(f["n_induction"]):
        ind = f"at most {max(f['n_induction'])} induction-circuit heads (never {k})"
    else:
        ind = "no induction-circuit head"
    parts = [bos, ind] + ([f"lag {f['lag']:.1f}x"] if f["lag"] is not None else [])
    out = [f"{name}: " + "; ".join(parts) + "."]
    free = f["bos_free_layers"]
    out.append(f"{name}: BOS-free layers (no BOS head at any revision): {', '.join(map(str, free)) or 'none'}.")
    screen = f["early_screen"]
    if screen["final_circuit"]:
        at = screen["first_at"].get("2/3")
        reach = (f"2/3 of it by {at['revision']}" + (f" ({at['token_fraction']:.2%} of training tokens)"
                                                     if at["token_fraction"] is not None else "")) if at else ""
        out.append(f"{name}: final induction circuit {', '.join(screen['final_circuit'])}; the screen finds {reach}.")
    if f.get("pr_lead"):
        verdicts = ", ".join(f"{h} {v['verdict']}" for h, v in f["pr_lead"].items())
        out.append(f"{name}: PR (effective rank) vs the induction crossing: {verdicts}.")
    return out
