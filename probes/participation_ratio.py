"""Participation ratio of each head's output z (docs/method.md section 3).

`entropy` (the study's): M = the N x d_head matrix of z, not centred, singular values s,
p = s^2 / sum s^2, PR = exp(-sum p log p). `classic`: (sum l)^2 / sum l^2 over the eigenvalues l
of the centred covariance. Both come from a float64 d_head x d_head Gram matrix (eig(M^T M) = s^2)
and a running sum of z, so the N x d_head rows are never kept.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from harness.capture.engine import Needs
from probes.base import Context, Probe, ProbeResult, Step


def entropy_pr(eig: np.ndarray) -> np.ndarray:
    """exp(entropy) of the normalised spectrum, over the last axis."""
    eig = np.clip(eig, 0, None)  # round-off makes tiny eigenvalues slightly negative
    p = eig / np.maximum(eig.sum(-1, keepdims=True), 1e-300)
    return np.exp(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1))


class ParticipationRatio(Probe):
    """Participation ratio of each head's output z: the study's exp-entropy PR (uncentred) and the classic PR (centred)."""

    columns = ("entropy", "classic")

    name = "pr"
    signals = {"pr": "entropy"}

    def __init__(self, positions: Literal["last", "all"] = "last", n: int | None = None):
        if positions not in ("last", "all"):
            raise ValueError(f"pr.positions must be 'last' or 'all', got '{positions}'")
        self.positions, self.n = positions, n

    def needs(self, batch):
        # `all` asks for z at every position: B*T*L*H*d_head values per batch (lower runner.batch_size if needed).
        return Needs.of(z=[-1] if self.positions == "last" else range(batch.seq_len))

    def on_checkpoint_start(self, ctx: Context):
        L, H, d = ctx.layout.n_layers, ctx.layout.n_heads, ctx.layout.d_head
        self.gram, self.sum, self.count = np.zeros((L, H, d, d)), np.zeros((L, H, d)), 0

    def on_batch(self, step: Step, ctx: Context):
        # The study used the first 500 examples of the screen's batch: read those, no extra forward pass.
        keep = torch.as_tensor(step.index < self.n if self.n else np.ones(len(step.index), bool))
        if not keep.any():
            return
        z = {p: v[keep.to(v.device)] for p, v in step.capture.z.items()}
        if self.positions == "last":
            assert (step.pos(ctx, "query") == step.input_ids.shape[1] - 1).all(), "the study's PR reads the last position"
            per_layer = [z[-1][:, layer] for layer in range(ctx.layout.n_layers)]  # (B, H, d)
        else:  # one layer at a time keeps the float64 copy small
            per_layer = [torch.cat([z[p][:, layer] for p in sorted(z)]) for layer in range(ctx.layout.n_layers)]
        for layer, m in enumerate(per_layer):
            m = m.double()
            self.gram[layer] += torch.einsum("nhd,nhe->hde", m, m).cpu().numpy()
            self.sum[layer] += m.sum(0).cpu().numpy()
        self.count += per_layer[0].shape[0]

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        n = self.count
        mean = self.sum / n
        cov = (self.gram - n * mean[..., :, None] * mean[..., None, :]) / max(n - 1, 1)
        # (sum l)^2 / sum l^2 = trace(C)^2 / ||C||_F^2 for a symmetric C: no eigendecomposition needed.
        tr, fro = np.trace(cov, axis1=-2, axis2=-1), np.sum(cov * cov, axis=(-2, -1))
        heads = {"entropy": entropy_pr(np.linalg.eigvalsh(self.gram)), "classic": tr**2 / np.maximum(fro, 1e-300)}
        return ProbeResult(heads=heads, scalars={"entropy_mean": float(heads["entropy"].mean()), "n_rows": n})
