"""The study's capability-specific selectivity screen (METHOD.md section 3).

From the attention row of the last query, per head: mean attention (over examples) to each
class target divided by the mean attention to 50 fixed baseline positions (a ratio of means).
"""
from __future__ import annotations

import numpy as np

from harness.engine import Needs
from probes.base import Context, Probe, ProbeResult, Step, circuit_names

CLASSES = ("induction", "duplicate", "previous_token", "self", "first_token", "local")


class Selectivity(Probe):
    """Study's selectivity screen: six classes vs a 50-position baseline; BOS, induction and previous-token circuits."""

    columns = CLASSES + ("baseline", "best_class", "bos", "induction_circuit", "prev_token_circuit")

    def __init__(self, name="selectivity", assign=30.0, induction=50.0, prev_token=100.0, bos=30.0,
                 sink_regime=0.7, eps=1e-8):
        super().__init__(name)
        self.assign, self.induction, self.prev_token, self.bos = assign, induction, prev_token, bos
        self.sink_regime, self.eps = sink_regime, eps

    def needs(self, batch):
        return Needs.of(rows=[-1])

    def on_checkpoint_start(self, ctx: Context):
        L, H = ctx.layout.n_layers, ctx.layout.n_heads
        self.sums = {c: np.zeros((L, H)) for c in CLASSES + ("baseline",)}
        self.n = 0

    def on_batch(self, step: Step, ctx: Context):
        row = step.capture.rows[-1].double().cpu().numpy()  # (B, L, H, T), query = last position
        q = step.pos(ctx, "query")
        assert (q == row.shape[-1] - 1).all(), "the screen reads the last query's row"
        b = np.arange(len(q))
        at = lambda p: row[b, :, :, p]
        first = ctx.batch.meta.get("first", 0)
        targets = {
            "induction": at(step.pos(ctx, "induction")),
            "duplicate": at(step.pos(ctx, "duplicate")),
            "previous_token": at(q - 1),
            "self": at(q),
            "first_token": row[..., first],
            "local": np.mean([at(q - d) for d in range(2, 6)], axis=0),  # T-3..T-6
            "baseline": row[..., ctx.batch.fixed["baseline"]].mean(-1),
        }
        for c, v in targets.items():
            self.sums[c] += v.sum(0)
        self.n += len(q)

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        mean = {c: s / self.n for c, s in self.sums.items()}
        base = np.maximum(mean["baseline"], self.eps)
        sel = {c: mean[c] / base for c in CLASSES}
        stacked = np.stack([sel[c] for c in CLASSES])  # (6, L, H)
        best = np.array(CLASSES, dtype=object)[stacked.argmax(0)]
        best = np.where(stacked.max(0) >= self.assign, best, "none").astype(str)
        bos = sel["first_token"] >= self.bos  # independent of the best class (study's tables)
        ind = sel["induction"] >= self.induction
        prev = (best == "previous_token") & (sel["previous_token"] >= self.prev_token)
        L = bos.shape[0]
        scalars = {
            "bos_fraction": float(bos.mean()),
            "n_bos": int(bos.sum()),
            "n_induction": int(ind.sum()),
            "n_prev_token": int(prev.sum()),
            "induction_max": float(sel["induction"].max()),
            "first_token_max": float(sel["first_token"].max()),
            "sink_regime": float(bos.mean() >= self.sink_regime),
            **{f"bos_layer_{layer:02d}": int(bos[layer].sum()) for layer in range(L)},
        }
        return ProbeResult(
            heads={**sel, "baseline": mean["baseline"], "best_class": best, "bos": bos,
                   "induction_circuit": ind, "prev_token_circuit": prev},
            scalars=scalars,
            info={"induction_circuit": circuit_names(ind), "prev_token_circuit": circuit_names(prev),
                  "bos_heads": circuit_names(bos)},
        )
