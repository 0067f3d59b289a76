"""Causal check by zero-ablation (docs/method.md section 3).

Zeroing a head = zeroing its slice of the output-projection input (the engine's `ablate=`). On the
shared induction batch, at the last position (the second A), the target is B (the token at ab+1):
top-1 / top-5 accuracy and the mean logit of B, clean and ablated. Per head (optional: L*H extra
passes per batch) and for the induction circuit (induction selectivity >= `induction`, computed here
from the same last-query rows as the screen) versus matched-random heads: the same count per layer,
drawn from the layer's non-circuit heads, one set per seed.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.capture.engine import Needs
from harness.common.heads import head_names
from probes.base import Context, Probe, ProbeResult, Step, ratio_of_means

METRICS = ("top1", "top5", "logit")


class Ablation(Probe):
    """Zero-ablation: top-1/top-5 accuracy and logit of B at the last position, per head and for the induction circuit vs matched-random heads."""

    columns = ("delta_top1", "delta_top5", "delta_logit", "circuit")
    needs_logits = True

    def __init__(self, per_head: bool | None = None, max_heads_per_head=64, induction=50.0, n_random=5, seed=0,
                 eps=1e-8):
        self.per_head, self.max_heads = per_head, max_heads_per_head  # per_head None = auto (small models only)
        self.induction, self.n_random, self.seed, self.eps = induction, n_random, seed, eps

    def thresholds(self):
        return {"induction": self.induction}

    def needs(self, batch):
        return Needs.of(rows=[-1], logits=[-1])

    def on_checkpoint_start(self, ctx: Context):
        L, H = ctx.layout.n_layers, ctx.layout.n_heads
        self.do_per_head = self.per_head if self.per_head is not None else L * H <= self.max_heads
        self.clean = dict.fromkeys(METRICS, 0.0)
        self.heads = {m: np.zeros((L, H)) for m in METRICS}
        self.ind, self.base = np.zeros((L, H)), np.zeros((L, H))
        self.seen, self.n_valid, self.stash, self.sets, self.set_scores = 0, 0, [], {}, {}
        self.circuit = np.zeros((L, H), dtype=bool)

    def score(self, logits, target) -> dict:
        """Sums over the batch of top-1 hit, top-5 hit and the logit of the target."""
        top5 = logits.topk(5, -1).indices
        return {"top1": float((top5[:, 0] == target).sum()), "top5": float((top5 == target[:, None]).any(-1).sum()),
                "logit": float(logits.gather(-1, target[:, None]).double().sum())}

    def ablated(self, ctx, ids, target, heads: dict) -> dict:
        cap = ctx.engine.run(ids, Needs.of(logits=[-1]), ablate=heads)
        return self.score(cap.logits[-1], target)

    def on_batch(self, step: Step, ctx: Context):
        ids = step.input_ids
        assert (step.pos(ctx, "query") == ids.shape[1] - 1).all(), "ablation reads the last position"
        b = torch.arange(len(ids), device=ids.device)
        target = ids[b, torch.as_tensor(step.pos(ctx, "induction"), device=ids.device)]  # B
        for m, v in self.score(step.capture.logits[-1], target).items():
            self.clean[m] += v
        row = step.capture.rows[-1].double().cpu().numpy()  # (B, L, H, T): the circuit, as the screen finds it
        valid = step.valid(ctx)  # the screen's convention: ab+1 over valid rows, the baseline over all
        self.ind += row[np.arange(len(ids)), :, :, step.pos(ctx, "induction")][valid].sum(0)
        self.n_valid += int(valid.sum())
        self.base += row[..., ctx.batch.fixed["baseline"]].mean(-1).sum(0)
        if self.do_per_head:
            for layer in range(ctx.layout.n_layers):
                for h in range(ctx.layout.n_heads):
                    for m, v in self.ablated(ctx, ids, target, {layer: [h]}).items():
                        self.heads[m][layer, h] += v
        self.stash.append((ids, target))  # token ids only (N x T ints): the circuit is known after the last batch
        self.seen += len(ids)
        if self.seen == len(ctx.batch):  # still inside the loop: the model is on the run's device
            self.ablate_sets(ctx)

    def ablate_sets(self, ctx: Context):
        sel = ratio_of_means(self.ind / max(self.n_valid, 1), self.base / self.seen, self.eps)
        self.circuit = sel >= self.induction
        rng = np.random.RandomState(self.seed)
        sets = {"circuit": self.circuit}
        for s in range(self.n_random):
            mask = np.zeros_like(self.circuit)
            for layer, k in enumerate(self.circuit.sum(1)):
                pool = np.flatnonzero(~self.circuit[layer])
                pool = pool if len(pool) >= k else np.arange(self.circuit.shape[1])
                mask[layer, rng.choice(pool, size=k, replace=False)] = True
            sets[f"random{s}"] = mask
        self.sets, stash, self.stash = sets, self.stash, []
        if not self.circuit.any():
            return
        for key, mask in sets.items():
            heads = {int(layer): np.flatnonzero(mask[layer]).tolist() for layer in np.flatnonzero(mask.any(1))}
            tot = dict.fromkeys(METRICS, 0.0)
            for ids, target in stash:
                for m, v in self.ablated(ctx, ids, target, heads).items():
                    tot[m] += v
            self.set_scores[key] = {m: v / self.seen for m, v in tot.items()}

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        n = self.seen
        clean = {m: v / n for m, v in self.clean.items()}
        nan = np.full_like(self.ind, np.nan)
        heads = {f"delta_{m}": (self.heads[m] / n - clean[m]) if self.do_per_head else nan for m in METRICS}
        scalars = {f"clean_{m}": clean[m] for m in METRICS} | {"n_circuit": int(self.circuit.sum())}
        rnd = [v for k, v in self.set_scores.items() if k != "circuit"]
        for m in METRICS:  # NaN when there is no circuit to ablate
            scalars[f"circuit_{m}"] = self.set_scores.get("circuit", {}).get(m, float("nan"))
            scalars[f"random_{m}_mean"] = float(np.mean([r[m] for r in rnd])) if rnd else float("nan")
            scalars[f"random_{m}_std"] = float(np.std([r[m] for r in rnd])) if rnd else float("nan")
        return ProbeResult(heads={**heads, "circuit": self.circuit}, scalars=scalars,
                           info={k: head_names(v) for k, v in self.sets.items()})
