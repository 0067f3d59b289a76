"""Null calibration of the induction selectivity (docs/method.md section 3).

A draw is one random target position per example: uniform over [1, T-1) minus that example's
class targets (first token, ab, ab+1, T-2, T-1 and the local T-6..T-3). Its null selectivity is
the selectivity formula with that target in place of ab+1, under the screen's conventions: mean over
the valid rows (as for ab+1) of the last query's attention to it, divided by the screen's baseline
(mean over all rows of the attention to the 50 fixed positions).
Per head: p99 and max over draws; whole model: p99 and max over all draws of all heads.
T_recall = max(2, whole-model p99), T_precision = 50 (fixed, the study's circuit threshold).
"""
from __future__ import annotations

import numpy as np
import torch

from harness.capture.engine import Needs
from probes.base import Context, Probe, ProbeResult, Step, ratio_of_means


def null_targets(batch, draws: int, seed: int) -> np.ndarray:
    """(draws, N) random non-special target positions, seeded (rejection sampling per example)."""
    T, q = batch.seq_len, batch.positions["query"]
    special = np.stack([np.full_like(q, batch.meta.get("first", 0)), batch.positions["duplicate"],
                        batch.positions["induction"], *[q - k for k in range(6)]], 1)  # (N, 9)
    rng = np.random.RandomState(seed)
    t = rng.randint(1, T - 1, size=(draws, len(q)))
    bad = (t[..., None] == special[None]).any(-1)
    while bad.any():
        t[bad] = rng.randint(1, T - 1, size=int(bad.sum()))
        bad = (t[..., None] == special[None]).any(-1)
    return t


class NullCalibration(Probe):
    """Induction selectivity with random non-special targets instead of ab+1: null p99/max per head and model; T_recall, T_precision."""

    columns = ("p99", "max")

    name = "null"

    def __init__(self, draws=500, seed=0, percentile=99.0, floor=2.0, precision=50.0, eps=1e-8):
        self.draws, self.seed, self.percentile = draws, seed, percentile
        self.floor, self.precision, self.eps = floor, precision, eps

    def thresholds(self):
        return {"induction": self.precision}  # T_precision: the induction-circuit threshold

    def needs(self, batch):
        return Needs.of(rows=[-1])

    def on_checkpoint_start(self, ctx: Context):
        L, H = ctx.layout.n_layers, ctx.layout.n_heads
        self.targets = null_targets(ctx.batch, self.draws, self.seed)
        self.sums, self.base = np.zeros((self.draws, L, H)), np.zeros((L, H))
        self.n = self.n_valid = 0

    def on_batch(self, step: Step, ctx: Context):
        row = step.capture.rows[-1].double()  # (B, L, H, T)
        assert (step.pos(ctx, "query") == row.shape[-1] - 1).all(), "the null reads the last query's row"
        B, L, H, T = row.shape
        flat = row.reshape(B, L * H, T)
        t = torch.as_tensor(self.targets[:, step.index], device=row.device)  # (D, B)
        valid = step.valid(ctx)
        b = torch.arange(B, device=row.device)
        keep = torch.as_tensor(valid, device=row.device, dtype=row.dtype)[None, :, None]
        for d0 in range(0, self.draws, 64):  # (64, B, L*H) at a time
            vals = flat[b[None, :], :, t[d0:d0 + 64]]
            self.sums[d0:d0 + 64] += (vals * keep).sum(1).reshape(-1, L, H).cpu().numpy()
        self.base += row[..., ctx.batch.fixed["baseline"]].mean(-1).sum(0).cpu().numpy()
        self.n += B
        self.n_valid += int(valid.sum())

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        n_valid = self.n_valid or np.nan  # no valid row: NaN throughout, like the screen's induction column
        null = ratio_of_means(self.sums / n_valid, self.base / self.n, self.eps)  # (D, L, H)
        p99 = float(np.percentile(null, self.percentile))
        t_recall = max(self.floor, p99) if self.n_valid else float("nan")
        return ProbeResult(
            heads={"p99": np.percentile(null, self.percentile, axis=0), "max": null.max(0)},
            scalars={"p99": p99, "max": float(null.max()), "t_recall": t_recall, "t_precision": self.precision},
            info={"draws": self.draws, "seed": self.seed, "n_valid": self.n_valid},
        )
