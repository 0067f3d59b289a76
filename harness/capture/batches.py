"""Probe batches. The study's induction batch is docs/method.md section 2, reproduced exactly."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from harness.common.errors import HarnessError

# Bump when a change to the code changes the batches it builds: part of every result's reuse key.
VERSION = 2


class DataError(HarnessError, ValueError):
    """A batch that cannot be built for this model (e.g. a vocab range that does not fit)."""


@dataclass
class ProbeBatch:
    """Token ids plus the per-example positions probes need.

    `positions` maps a name to an int array of shape (N,): e.g. `query` (the second A),
    `induction` (ab+1), `duplicate` (ab), `first` (position 0 of the study's sequence).
    `fixed` holds positions shared by all examples (e.g. the 50 baseline positions).
    """

    input_ids: torch.Tensor  # (N, T) int64
    positions: dict[str, np.ndarray]
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    valid: np.ndarray | None = None  # (N,) bool: rows whose induction/duplicate targets count; None = all
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.valid is None:
            self.valid = np.ones(len(self), dtype=bool)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]


def check_vocab(vocab_lo: int, vocab_hi: int, vocab_size: int, model: str = "model") -> None:
    if not (0 <= vocab_lo and vocab_lo + 2 < vocab_hi <= vocab_size):
        raise DataError(
            f"data vocab range [{vocab_lo}, {vocab_hi}) does not fit {model} (vocab size {vocab_size}); "
            f"choose 0 <= data.vocab_lo < data.vocab_hi - 2 and data.vocab_hi <= {vocab_size}"
        )


def min_seq_len(n_baseline: int = 50) -> int:
    """Shortest T the batch layout allows: ab ~ U[20, T//2) and n_baseline positions outside the targets."""
    return max(42, n_baseline + 7)


def baseline_positions(seq_len: int, n: int = 50, seed: int = 0) -> np.ndarray:
    """The study's fixed baseline positions, in its draw order (docs/method.md section 2).

    `randint(1, T-1)` from RandomState(seed), one at a time, keeping each new position outside the class
    targets {0, T-1, T-2, T-6..T-3} until n are kept. (`choice` without replacement gives another set.)
    """
    T = seq_len
    if T - 7 < n:
        raise DataError(f"data.seq_len={T} leaves {max(T - 7, 0)} baseline positions, need data.n_baseline={n}; "
                        f"use data.seq_len >= {n + 7}")
    excluded = {0, T - 1, T - 2, T - 3, T - 4, T - 5, T - 6}
    rng = np.random.RandomState(seed)
    kept: list[int] = []
    while len(kept) < n:
        p = int(rng.randint(1, T - 1))
        if p not in excluded and p not in kept:
            kept.append(p)
    return np.array(kept)


def _study_row(rng: np.random.RandomState, T: int, lo: int, hi: int) -> tuple[np.ndarray, int, int]:
    """One row in the study's exact draw order; returns (tokens, b, ab)."""
    seq = rng.randint(lo, hi, size=T)
    a, b = rng.choice(np.arange(lo, hi), size=2, replace=False)
    ab = int(rng.randint(20, T // 2))
    seq[ab], seq[ab + 1] = a, b
    # One draw per collision, positions in order, no re-check: a pass for A, then one for B.
    # Precomputing each pass's positions is equivalent: a redraw only changes a position already visited.
    for tok, keep in ((a, ab), (b, ab + 1)):
        hit = np.flatnonzero(seq == tok)
        hit = hit[hit != keep]
        seq[hit] = rng.randint(lo, hi, size=len(hit))  # == len(hit) scalar draws (same stream)
    seq[T - 1] = a
    return seq, int(b), ab


def induction_batch(
    n: int = 2000,
    seq_len: int = 256,
    vocab_lo: int = 100,
    vocab_hi: int = 10000,
    seed: int = 42,
    prepend_bos: bool = False,
    bos_id: int | None = None,
    n_baseline: int = 50,
    baseline_seed: int = 0,
) -> ProbeBatch:
    """The study's induction batch, bit for bit: uniform filler, `A B` at (ab, ab+1), A again at T-1.

    Rows where B is not unique in positions 0..T-2 (a redraw can re-create it) are not `valid`: the study
    leaves them out of the induction and duplicate means. With `prepend_bos` (our addition, not the
    study's), the model's `bos_id` is prepended to the same rows and every position shifts by one.
    """
    T = seq_len
    if n < 1:
        raise DataError(f"data.n={n}: the probe batch needs at least one sequence")
    if T < min_seq_len(n_baseline):
        raise DataError(f"data.seq_len={T} is too short for the induction batch (need >= {min_seq_len(n_baseline)})")
    rng = np.random.RandomState(seed)
    ids = np.empty((n, T), dtype=np.int64)
    ab, valid = np.empty(n, dtype=np.int64), np.empty(n, dtype=bool)
    for i in range(n):
        ids[i], b, ab[i] = _study_row(rng, T, vocab_lo, vocab_hi)
        valid[i] = (ids[i, :T - 1] == b).sum() == 1
    shift = 0
    if prepend_bos:
        if bos_id is None:
            raise DataError("data.prepend_bos=true but the model has no bos_id; set model.bos_id")
        ids = np.concatenate([np.full((n, 1), bos_id, dtype=np.int64), ids], axis=1)
        shift = 1
    q = np.full(n, T - 1 + shift)
    return ProbeBatch(
        input_ids=torch.from_numpy(ids),
        positions={"query": q, "induction": ab + 1 + shift, "duplicate": ab + shift},
        fixed={"baseline": baseline_positions(T, n_baseline, baseline_seed) + shift},
        valid=valid,
        meta=dict(kind="induction", n=n, seq_len=T, vocab_lo=vocab_lo, vocab_hi=vocab_hi, seed=seed,
                  prepend_bos=prepend_bos, bos_id=bos_id, first=0, n_valid=int(valid.sum())),
    )
