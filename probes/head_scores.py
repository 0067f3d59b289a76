"""Standard head scores on [BOS] + R + R (TransformerLens / ARENA; docs/method.md section 3).

R is uniform random ordinary tokens of length rep_len. With r = rep_len and the second copy at
positions [1+r, 1+2r), the score is the mean attention on an offset diagonal:
induction A[i, i-(r-1)] and duplicate A[i, i-r] over the second copy's queries; previous-token
A[i, i-1] over queries 2..2r (query 1's previous token is BOS, which a sink head gets for free).
Each is scored at several repeat lengths (default 50 and 37) and the main `score` is the minimum:
a head that attends a fixed distance back scores high at one length only.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from harness.capture.batches import ProbeBatch
from harness.capture.engine import Needs, Reduction
from probes.base import Context, Probe, ProbeResult, Step


@functools.lru_cache(maxsize=4)  # the three scores get the same object, so they share one forward pass
def repeat_batch(lengths: tuple, n: int, seed: int, vocab_lo: int, vocab_hi: int, bos_id) -> ProbeBatch:
    """n examples per repeat length; shorter ones are padded at the end with random tokens, which
    the causal mask hides from the scored queries."""
    T = 1 + 2 * max(lengths)
    rng = np.random.RandomState(seed)
    ids, rep = [], []
    for r in lengths:
        first = np.full((n, 1), bos_id) if bos_id is not None else rng.randint(vocab_lo, vocab_hi, size=(n, 1))
        R = rng.randint(vocab_lo, vocab_hi, size=(n, r))
        pad = rng.randint(vocab_lo, vocab_hi, size=(n, T - 1 - 2 * r))
        ids.append(np.concatenate([first, R, R, pad], 1))
        rep.append(np.full(n, r))
    return ProbeBatch(input_ids=torch.from_numpy(np.concatenate(ids).astype(np.int64)),
                      positions={"rep_len": np.concatenate(rep)},
                      meta={"kind": "repeat", "lengths": list(lengths), "n": n, "seed": seed, "vocab_lo": vocab_lo,
                            "vocab_hi": vocab_hi, "bos_id": bos_id})


class HeadScore(Probe):
    """Base of the [BOS] + R + R scores; subclasses give the diagonal and the query range."""

    columns = ("score", "score_len<r>", "is_head")

    def __init__(self, lengths=(50, 37), n=100, seed=0, threshold=0.4):
        self.lengths, self.n, self.seed, self.threshold = tuple(int(r) for r in lengths), n, seed, threshold

    def reduction(self, r: int) -> Reduction:
        raise NotImplementedError

    def make_batch(self, ctx: Context):
        vocab = ctx.model_cfg.get("batch") or ctx.batch.meta  # the model's ordinary-token range
        return repeat_batch(self.lengths, self.n, self.seed, int(vocab["vocab_lo"]), int(vocab["vocab_hi"]),
                            ctx.model_cfg.get("bos_id"))

    def needs(self, batch):
        return Needs.of(reductions=[self.reduction(r) for r in self.lengths])

    def on_checkpoint_start(self, ctx: Context):
        self.sums = {r: np.zeros((ctx.layout.n_layers, ctx.layout.n_heads)) for r in self.lengths}
        self.counts = dict.fromkeys(self.lengths, 0)

    def on_batch(self, step: Step, ctx: Context):
        rep = step.pos(ctx, "rep_len")
        for r in self.lengths:  # each example is scored at its own length only
            v = step.capture.reductions[self.reduction(r)][torch.as_tensor(rep == r)]
            self.sums[r] += v.double().sum(0).cpu().numpy()
            self.counts[r] += len(v)

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        per = {r: self.sums[r] / self.counts[r] for r in self.lengths}
        score = np.min(np.stack(list(per.values())), 0)
        return ProbeResult(
            heads={"score": score, **{f"score_len{r}": v for r, v in per.items()}, "is_head": score >= self.threshold},
            scalars={"n_heads": int((score >= self.threshold).sum()), "max": float(score.max())},
        )


class InductionScore(HeadScore):
    """Induction score on [BOS]+R+R: attention to the token after the previous occurrence, min over repeat lengths."""

    name = "induction_score"

    def reduction(self, r):
        return Reduction("diag", r - 1, 1 + r, 1 + 2 * r)


class PreviousTokenScore(HeadScore):
    """Previous-token score on [BOS]+R+R: attention to position i-1 (queries 2..2r), min over repeat lengths."""

    name = "previous_token"

    def reduction(self, r):
        return Reduction("diag", 1, 2, 1 + 2 * r)


class DuplicateTokenScore(HeadScore):
    """Duplicate-token score on [BOS]+R+R: attention to the previous occurrence of the same token, min over repeat lengths."""

    name = "duplicate_token"

    def reduction(self, r):
        return Reduction("diag", r, 1 + r, 1 + 2 * r)
