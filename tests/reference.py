"""Independent eager reference computations of the study's head signals (METHOD.md section 3).

Plain `output_attentions=True` with eager attention; nothing from the harness's capture engine, so
tests can check the harness (and the zoo) against it.
"""
from __future__ import annotations

import numpy as np
import torch

CLASSES = ("induction", "duplicate", "previous", "self", "first", "local")


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


def last_query_rows(model, batch, chunk: int = 100) -> torch.Tensor:
    """(N, L, H, T) attention rows of each example's query, computed in chunks (full maps are large)."""
    rows = []
    for i in range(0, len(batch), chunk):
        ids = batch.input_ids[i:i + chunk]
        q = torch.as_tensor(batch.positions["query"][i:i + chunk])
        attns = eager_attentions(model, ids)
        rows.append(torch.stack([a[torch.arange(len(ids)), :, q] for a in attns], 1))
    return torch.cat(rows)


def study_selectivity(attns, batch) -> dict[str, np.ndarray]:
    """Class -> (L, H) selectivity: mean attention (over examples) to the class target divided by the
    mean attention to the 50 baseline positions (a ratio of means, floor 1e-8).

    `attns`: a list of per-layer (B, H, T, T) maps (from `eager_attentions`) or the (B, L, H, T) rows
    of the query (from `last_query_rows`).
    """
    n = len(batch)
    ex = np.arange(n)
    q = batch.positions["query"]
    if isinstance(attns, (list, tuple)):
        rows = torch.stack([a[torch.arange(n), :, torch.as_tensor(q)] for a in attns], 1)
    else:
        rows = attns
    rows = rows.double().numpy()  # (N, L, H, T)
    first = batch.meta.get("first", 0)
    targets = {
        "induction": rows[ex, :, :, batch.positions["induction"]],
        "duplicate": rows[ex, :, :, batch.positions["duplicate"]],
        "previous": rows[ex, :, :, q - 1],
        "self": rows[ex, :, :, q],
        "first": rows[:, :, :, first],
        "local": np.mean([rows[ex, :, :, q - k] for k in (2, 3, 4, 5)], axis=0),
    }
    base = rows[:, :, :, batch.fixed["baseline"]].mean(axis=(0, 3))
    return {c: v.mean(0) / np.maximum(base, 1e-8) for c, v in targets.items()}


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
