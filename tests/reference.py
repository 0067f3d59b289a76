"""Independent eager reference computations of the study's head signals (docs/method.md section 3).

Plain `output_attentions=True` with eager attention; nothing from the harness's capture engine, so
tests can check the harness (and the zoo) against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# The study's classes in its tie order: ranked by selectivity, descending, ties kept in this order.
TIE_ORDER = ("induction", "previous_token", "duplicate", "first_token", "self", "local")


def study_batch(n: int, seq_len: int, vocab_lo: int, vocab_hi: int, seed: int = 42):
    """The study's induction batch, written from docs/method.md section 2 alone (nothing from the harness).

    Returns (ids (n, T), b (n,), ab (n,)): the tokens, each row's B and the planted position of A.
    """
    rng = np.random.RandomState(seed)
    ids, bs, abs_ = [], [], []
    for _ in range(n):
        seq = rng.randint(vocab_lo, vocab_hi, size=seq_len)
        a, b = rng.choice(np.arange(vocab_lo, vocab_hi), size=2, replace=False)
        ab = rng.randint(20, seq_len // 2)
        seq[ab] = a
        seq[ab + 1] = b
        for k in range(seq_len):
            if seq[k] == a and k != ab:
                seq[k] = rng.randint(vocab_lo, vocab_hi)
        for k in range(seq_len):
            if seq[k] == b and k != ab + 1:
                seq[k] = rng.randint(vocab_lo, vocab_hi)
        seq[seq_len - 1] = a
        ids.append(seq)
        bs.append(b)
        abs_.append(ab)
    return np.array(ids, dtype=np.int64), np.array(bs), np.array(abs_)


def study_valid(ids: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) bool: B occurs exactly once in positions 0..T-2 (the study's valid rows)."""
    return np.array([(row[:-1] == bb).sum() == 1 for row, bb in zip(ids, b)])


def study_baseline(seq_len: int, n: int = 50, seed: int = 0) -> list[int]:
    """The 50 baseline positions in the study's draw order (docs/method.md section 2)."""
    T = seq_len
    excluded = {0, T - 1, T - 2, T - 6, T - 5, T - 4, T - 3}
    rng = np.random.RandomState(seed)
    kept = []
    while len(kept) < n:
        p = rng.randint(1, T - 1)
        if p not in excluded and p not in kept:
            kept.append(p)
    return kept


def load_eager(repo: str, revision: str, cache_dir=None):
    """A checkpoint from the local hub cache, with transformers' plain eager attention (no capture engine)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(repo, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                                attn_implementation="eager").eval()


def eager_attentions(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """One (B, H, T, T) attention map per layer, from eager attention."""
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids, output_attentions=True)
    finally:
        model.set_attn_implementation(prev)
    return [a.float() for a in out.attentions]


@dataclass
class StudyInputs:
    """The study's batch and the positions its code uses, rebuilt from docs/method.md section 2."""

    ids: torch.Tensor  # (N, T) or (N, T+1) with a prepended BOS; the query is the last position
    ab: np.ndarray  # (N,) position of the first A (shifted with BOS)
    valid: np.ndarray  # (N,) rows whose induction/duplicate targets count
    baseline: np.ndarray  # (50,) baseline positions (shifted with BOS)


def study_inputs(n: int, seq_len: int, vocab_lo: int, vocab_hi: int, bos_id: int | None = None,
                 seed: int = 42) -> StudyInputs:
    ids, b, ab = study_batch(n, seq_len, vocab_lo, vocab_hi, seed)
    valid, shift = study_valid(ids, b), int(bos_id is not None)
    if shift:
        ids = np.concatenate([np.full((n, 1), bos_id, dtype=np.int64), ids], 1)
    return StudyInputs(torch.from_numpy(ids), ab + shift, valid, np.array(study_baseline(seq_len)) + shift)


def last_query_rows(model, ids: torch.Tensor, chunk: int = 100) -> torch.Tensor:
    """(N, L, H, T) attention rows of the last position, computed in chunks (full maps are large)."""
    rows = []
    for i in range(0, len(ids), chunk):
        attns = eager_attentions(model, ids[i:i + chunk])
        rows.append(torch.stack([a[:, :, -1] for a in attns], 1))
    return torch.cat(rows)


def study_selectivity(rows: torch.Tensor, inp: StudyInputs) -> dict[str, np.ndarray]:
    """Class -> (L, H) selectivity from the (N, L, H, T) last-query rows: mean attention (over examples; over
    valid rows for induction and duplicate) to the class target / mean attention to the 50 baseline positions
    (a ratio of means, floor 1e-8)."""
    rows = rows.double().numpy()
    ex, v, T = np.arange(len(rows)), inp.valid, rows.shape[-1]
    targets = {
        "induction": rows[ex, :, :, inp.ab + 1][v],
        "duplicate": rows[ex, :, :, inp.ab][v],
        "previous_token": rows[..., T - 2],
        "self": rows[..., T - 1],
        "first_token": rows[..., 0],
        "local": rows[..., T - 6:T - 2].mean(-1),
    }
    base = rows[..., inp.baseline].mean(axis=(0, 3))
    return {c: t.mean(0) / np.maximum(base, 1e-8) for c, t in targets.items()}


def study_best_class(sel: dict[str, np.ndarray], assign: float = 30.0) -> np.ndarray:
    """(L, H) best class head by head with Python's stable sort (ties keep TIE_ORDER), "none" below `assign`."""
    L, H = sel["induction"].shape
    out = np.empty((L, H), dtype=object)
    for layer in range(L):
        for h in range(H):
            top = sorted(TIE_ORDER, key=lambda c: -sel[c][layer, h])[0]
            out[layer, h] = top if sel[top][layer, h] >= assign else "none"
    return out


def _random_ids(rng, n, length, vocab_lo, vocab_hi, bos_id):
    ids = rng.randint(vocab_lo, vocab_hi, size=(n, length))
    if bos_id is not None:
        ids = np.concatenate([np.full((n, 1), bos_id), ids], 1)
    return torch.from_numpy(ids.astype(np.int64))


def induction_score(model, rep_len: int, n: int, vocab_lo: int, vocab_hi: int, bos_id: int | None,
                    seed: int = 0) -> np.ndarray:
    """(L, H) standard induction score on [BOS] + R + R: mean attention from each token of the second R
    to the token after its earlier copy (the offset diagonal)."""
    rng = np.random.RandomState(seed)
    r = _random_ids(rng, n, rep_len, vocab_lo, vocab_hi, None)
    ids = torch.cat([r, r], 1)
    s = 0
    if bos_id is not None:
        ids = torch.cat([torch.full((n, 1), bos_id), ids], 1)
        s = 1
    qs = torch.arange(s + rep_len, s + 2 * rep_len)
    ks = qs - rep_len + 1
    return np.stack([a[:, :, qs, ks].mean((0, 2)).numpy() for a in eager_attentions(model, ids)])


def prev_token_score(model, seq_len: int, n: int, vocab_lo: int, vocab_hi: int, bos_id: int | None,
                     seed: int = 0) -> np.ndarray:
    """(L, H) mean attention to the previous token on [BOS] + random tokens, over queries 2..T-1
    (query 1's previous token is BOS, which a sink head would get credit for)."""
    ids = _random_ids(np.random.RandomState(seed), n, seq_len, vocab_lo, vocab_hi, bos_id)
    qs = torch.arange(2, ids.shape[1])
    return np.stack([a[:, :, qs, qs - 1].mean((0, 2)).numpy() for a in eager_attentions(model, ids)])


def sink_rate(model, seq_len: int, n: int, vocab_lo: int, vocab_hi: int, bos_id: int | None,
              seed: int = 0) -> np.ndarray:
    """(L, H) Gu et al.'s alpha: mean over queries i >= 1 of the attention to position 0."""
    ids = _random_ids(np.random.RandomState(seed), n, seq_len, vocab_lo, vocab_hi, bos_id)
    return np.stack([a[:, :, 1:, 0].mean((0, 2)).numpy() for a in eager_attentions(model, ids)])
