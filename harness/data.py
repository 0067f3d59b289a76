"""Probe batches. The study's induction batch is METHOD.md section 2, reproduced exactly."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from harness.errors import HarnessError


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
    meta: dict = field(default_factory=dict)

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


def baseline_positions(seq_len: int, n: int = 50, seed: int = 0) -> np.ndarray:
    """The study's 50 fixed baseline positions: RandomState(0) over [1, T-1) minus the class targets."""
    T = seq_len
    excluded = {0, T - 1, T - 2, T - 3, T - 4, T - 5, T - 6}
    candidates = np.array([p for p in range(1, T - 1) if p not in excluded])
    return np.sort(np.random.RandomState(seed).choice(candidates, size=n, replace=False))


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
    """N sequences: uniform filler, `A B` at (ab, ab+1) with ab ~ U[20, T//2), A again at T-1.

    Every other occurrence of A or B is resampled away. With `prepend_bos` (our addition, not
    the study's), the model's `bos_id` is prepended and every position shifts by one.
    """
    T = seq_len
    if T < 48:
        raise DataError(f"data.seq_len={T} is too short for the induction batch (need >= 48)")
    rng = np.random.RandomState(seed)
    ids = np.empty((n, T), dtype=np.int64)
    ab = np.empty(n, dtype=np.int64)
    for i in range(n):
        seq = rng.randint(vocab_lo, vocab_hi, size=T)
        a, b = rng.choice(np.arange(vocab_lo, vocab_hi), size=2, replace=False)
        ab[i] = rng.randint(20, T // 2)
        keep = np.zeros(T, dtype=bool)
        keep[[ab[i], ab[i] + 1, T - 1]] = True
        bad = np.isin(seq, (a, b)) & ~keep
        while bad.any():  # resample until A and B occur only where planted
            seq[bad] = rng.randint(vocab_lo, vocab_hi, size=int(bad.sum()))
            bad = np.isin(seq, (a, b)) & ~keep
        seq[ab[i]], seq[ab[i] + 1], seq[T - 1] = a, b, a
        ids[i] = seq
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
        meta=dict(kind="induction", n=n, seq_len=T, vocab_lo=vocab_lo, vocab_hi=vocab_hi,
                  seed=seed, prepend_bos=prepend_bos, bos_id=bos_id, first=0),
    )
