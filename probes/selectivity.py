"""The study's capability-specific selectivity screen (docs/method.md section 3).

From the attention row of the last query, per head: mean attention (over examples) to each
class target divided by the mean attention to 50 fixed baseline positions (a ratio of means).
"""
from __future__ import annotations

import numpy as np

from harness.capture.engine import Needs
from harness.common.heads import head_names
from probes.base import Context, Probe, ProbeResult, Step, ratio_of_means

# The study's tie order: classes are ranked by selectivity, descending, ties kept in this order.
CLASSES = ("induction", "previous_token", "duplicate", "first_token", "self", "local")
PAIRED = ("induction", "duplicate")  # targets at ab / ab+1: averaged over valid rows only


def best_class(sel: dict[str, np.ndarray], assign: float) -> np.ndarray:
    """(L, H) name of the highest class (first in CLASSES on a tie), "none" below `assign`."""
    stacked = np.stack([np.nan_to_num(sel[c], nan=-np.inf) for c in CLASSES])  # (6, L, H)
    best = np.array(CLASSES, dtype=object)[stacked.argmax(0)]  # argmax keeps the first of equal maxima
    return np.where(stacked.max(0) >= assign, best, "none").astype(str)


class Selectivity(Probe):
    """Study's selectivity screen: six classes vs a 50-position baseline; BOS (both rules), induction and previous-token circuits."""

    columns = CLASSES + ("baseline", "best_class", "bos", "bos_best", "induction_circuit", "prev_token_circuit")
    version = 1
    signals = {"induction": "induction", "first_token": "first_token", "previous_token": "previous_token",
               "bos_fraction": "bos_fraction", "n_induction": "n_induction", "induction_max": "induction_max"}

    def __init__(self, assign=30.0, induction=50.0, prev_token=100.0, bos=30.0, sink_regime=0.7, eps=1e-8):
        self.assign, self.induction, self.prev_token, self.bos = assign, induction, prev_token, bos
        self.sink_regime, self.eps = sink_regime, eps

    def thresholds(self):
        return {"assign": self.assign, "induction": self.induction, "prev_token": self.prev_token, "bos": self.bos,
                "sink_regime": self.sink_regime}

    def needs(self, batch):
        return Needs.of(rows=[-1])

    def on_checkpoint_start(self, ctx: Context):
        L, H = ctx.layout.n_layers, ctx.layout.n_heads
        self.sums = {c: np.zeros((L, H)) for c in CLASSES + ("baseline",)}
        self.n = self.n_valid = 0

    def on_batch(self, step: Step, ctx: Context):
        row = step.capture.rows[-1].double().cpu().numpy()  # (B, L, H, T), query = last position
        q = step.pos(ctx, "query")
        assert (q == row.shape[-1] - 1).all(), "the screen reads the last query's row"
        b = np.arange(len(q))
        at = lambda p: row[b, :, :, p]
        valid = step.valid(ctx)
        first = ctx.batch.meta.get("first", 0)
        targets = {
            "induction": at(step.pos(ctx, "induction"))[valid],
            "duplicate": at(step.pos(ctx, "duplicate"))[valid],
            "previous_token": at(q - 1),
            "self": at(q),
            "first_token": row[..., first],
            "local": np.mean([at(q - d) for d in range(2, 6)], axis=0),  # T-3..T-6
            "baseline": row[..., ctx.batch.fixed["baseline"]].mean(-1),
        }
        for c, v in targets.items():
            self.sums[c] += v.sum(0)
        self.n += len(q)
        self.n_valid += int(valid.sum())

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        count = {c: self.n_valid if c in PAIRED else self.n for c in self.sums}
        with np.errstate(invalid="ignore"):  # no valid row: induction/duplicate are NaN, not 0
            mean = {c: s / count[c] if count[c] else s * np.nan for c, s in self.sums.items()}
        sel = {c: ratio_of_means(mean[c], mean["baseline"], self.eps) for c in CLASSES}
        best = best_class(sel, self.assign)
        bos = sel["first_token"] >= self.bos  # rule (a): whatever the best class (study's developmental numbers)
        bos_best = best == "first_token"  # rule (b): best class first-token (study's final-checkpoint tables)
        ind = sel["induction"] >= self.induction
        prev = (best == "previous_token") & (sel["previous_token"] >= self.prev_token)
        L = bos.shape[0]
        scalars = {
            "bos_fraction": float(bos.mean()),
            "n_bos": int(bos.sum()),
            "bos_best_fraction": float(bos_best.mean()),
            "n_bos_best": int(bos_best.sum()),
            "n_induction": int(ind.sum()),
            "n_prev_token": int(prev.sum()),
            "n_valid": self.n_valid,
            "induction_max": float(np.nanmax(sel["induction"], initial=-np.inf)),
            "first_token_max": float(sel["first_token"].max()),
            "sink_regime": float(bos.mean() >= self.sink_regime),
            **{f"bos_layer_{layer:02d}": int(bos[layer].sum()) for layer in range(L)},
        }
        return ProbeResult(
            heads={**sel, "baseline": mean["baseline"], "best_class": best, "bos": bos, "bos_best": bos_best,
                   "induction_circuit": ind, "prev_token_circuit": prev},
            scalars=scalars,
            info={"induction_circuit": head_names(ind), "prev_token_circuit": head_names(prev),
                  "bos_heads": head_names(bos), "bos_best_heads": head_names(bos_best)},
        )
