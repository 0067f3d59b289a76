"""Seeded, offline training data for the zoo (token ids only, no tokenizer).

Vocabulary: id 0 = BOS, ids 1..4 = triggers (Bigram-Backcopy), ids 5.. = ordinary tokens.
Tasks:
- repeats: blocks `R G R` (R random ordinary tokens, G a random gap) packed to the sequence length.
  The next-token loss on the second R is only low for a model that copies, which is the induction
  circuit (previous-token head + induction head). R lengths are randomised because a fixed length
  teaches a fixed-offset shortcut; the gap stretches the copy distance to the probe's (B sits
  63-107 tokens before the query in the study's batch at T=128).
- backcopy (Guo et al. 2024, "Active-Dormant Attention Heads"): a fixed random bigram chain; with
  probability p a trigger is emitted and the token after it copies the token before it. Heads that
  copy only after triggers learn to park ("go dormant") on the first token elsewhere: an attention sink.
  Used as the OLMo/OLMoE sink phase; its copy needs no composition, so its sink can form in layer 0.
- mode (`mode_seqs`, optional phase mix `mode`): one `trigger m` pair per row switches the later tokens
  to the class of m; a head that reads m is dormant wherever there is no pair. Not in the shipped
  recipes: the class can also be read off the later tokens themselves, so no dedicated head is needed;
  on NeoX (2 and 3 layers) it formed a BOS head on the probe batch only in some runs.
- recall (`insert_recall`, phase mix `recall`, with `ramp`): `STORE v` early in a row; the token after each later
  RECALL trigger is v's class. Not in a shipped recipe: ramped in after the circuit it is learned by
  the induction heads themselves, and the BOS attention it grows stays in an induction head (see the function).
"""
from __future__ import annotations

import numpy as np

BOS = 0
TRIGGERS = (1, 2, 3, 4)
STORE, RECALL = TRIGGERS[0], TRIGGERS[1]  # the recall task's two triggers
FIRST_ORDINARY = 5


def repeat_lengths(len_lo: int, len_hi: int, held_out=()) -> np.ndarray:
    """Trainable R lengths in [len_lo, len_hi], minus the held-out ones (measured, never trained)."""
    return np.array([n for n in range(len_lo, len_hi + 1) if n not in set(held_out)])


def repeat_seqs(rng: np.random.Generator, n: int, seq_len: int, vocab: int, len_lo: int, len_hi: int,
                held_out=(), gap_max: int = 0) -> np.ndarray:
    """(n, seq_len) rows of packed `R G R` blocks; R length log-uniform over the allowed lengths."""
    lengths = repeat_lengths(len_lo, len_hi, held_out)
    w = 1.0 / lengths  # log-uniform: each octave of lengths is equally likely
    w /= w.sum()
    out = np.empty((n, seq_len), dtype=np.int64)
    for i in range(n):
        row = []
        while len(row) < seq_len:
            r = rng.integers(FIRST_ORDINARY, vocab, size=rng.choice(lengths, p=w))
            g = rng.integers(FIRST_ORDINARY, vocab, size=rng.integers(0, gap_max + 1))
            row.extend([*r, *g, *r])
        out[i] = row[:seq_len]
    return out


def bigram_chain(seed: int, vocab: int, n_succ: int = 4, alpha: float = 1.0):
    """Fixed random chain: each ordinary token has `n_succ` successors with Dirichlet(alpha) weights."""
    rng = np.random.default_rng(seed)
    ords = np.arange(FIRST_ORDINARY, vocab)
    succ = np.stack([rng.choice(ords, size=n_succ, replace=False) for _ in range(vocab)])
    probs = rng.dirichlet(np.full(n_succ, alpha), size=vocab)
    return succ, probs.cumsum(1)


def backcopy_seqs(rng: np.random.Generator, chain, n: int, seq_len: int, vocab: int,
                  p_trigger: float = 0.1) -> np.ndarray:
    """(n, seq_len) Bigram-Backcopy rows, generated a column at a time for all rows."""
    succ, cum = chain
    out = np.empty((n, seq_len), dtype=np.int64)
    out[:, 0] = rng.integers(FIRST_ORDINARY, vocab, size=n)
    rows = np.arange(n)
    for t in range(1, seq_len):
        prev = out[:, t - 1]
        k = (rng.random(n)[:, None] > cum[prev]).sum(1).clip(max=succ.shape[1] - 1)
        nxt = succ[prev, k]
        after_trigger = np.isin(prev, TRIGGERS)
        if t >= 2:  # the token after a trigger copies the one before the trigger
            nxt = np.where(after_trigger, out[:, t - 2], nxt)
        trig = ~after_trigger & (rng.random(n) < p_trigger)
        nxt = np.where(trig, rng.choice(TRIGGERS, size=n), nxt)
        out[rows, t] = nxt
    return out


def mode_seqs(rng: np.random.Generator, n: int, seq_len: int, vocab: int, n_modes: int = 4) -> np.ndarray:
    """(n, seq_len) "mode" rows: uniform ordinary tokens until one `trigger m` pair at a random position;
    every later token is drawn from the mode class of m, {t : t = m mod n_modes}.

    Predicting after the pair needs a head that finds "the token after a trigger", which takes a
    previous-token head below it (so not layer 0). Before the pair, and on any trigger-free text such as
    the probe batch, that head has nothing to read and parks on the first token: an active-dormant sink
    head distinct from the induction heads."""
    out = rng.integers(FIRST_ORDINARY, vocab, size=(n, seq_len))
    ords = np.arange(FIRST_ORDINARY, vocab)
    for i in range(n):
        t = rng.integers(1, seq_len - 2)
        out[i, t] = rng.choice(TRIGGERS)
        m = out[i, t + 1]
        cls = ords[ords % n_modes == m % n_modes]
        out[i, t + 2:] = rng.choice(cls, size=seq_len - t - 2)
    return out


def insert_triggers(rng: np.random.Generator, seqs: np.ndarray, p: float) -> np.ndarray:
    """Apply the backcopy rule inside other rows: with probability p a position becomes a trigger and
    the next one copies the token before it. A head that learns this copy is needed at triggers only,
    so elsewhere (including the trigger-free probe batch) it goes dormant on the first token."""
    out = seqs.copy()
    for t in range(1, seqs.shape[1] - 1):
        hit = (rng.random(len(out)) < p) & ~np.isin(out[:, t - 1], TRIGGERS)
        out[hit, t] = rng.choice(TRIGGERS, size=hit.sum())
        out[hit, t + 1] = out[hit, t - 1]
    return out


def recall_class(token: np.ndarray, classes: int) -> np.ndarray:
    """The recall task's answer for a stored token: one of `classes` ordinary tokens, by the token's residue."""
    return FIRST_ORDINARY + (token - FIRST_ORDINARY) % classes


def insert_recall(rng: np.random.Generator, seqs: np.ndarray, vocab: int, p: float, recalls: int = 1,
                  classes: int = 4) -> np.ndarray:
    """Store-and-recall inside other rows: on a fraction `p` of rows `STORE v` (v a random ordinary token) is
    written at a random position, and each of `recalls` later RECALL triggers is followed by `recall_class(v)`.

    The intent: a head that reads v sits above layer 0 (v is "the token after STORE", found through the
    previous-token head, as an induction head finds its target) and has nothing to read on trigger-free text
    such as the probe batch, so it parks on the first token (an active-dormant head, Guo et al. 2024).
    What was measured (NeoX and OLMoE, 2 layers x 4 heads, ramped in after the circuit formed):
    - the task is learned (recall accuracy 0.99), but by the induction heads, not by a new head: on NeoX all
      four layer-1 induction heads put 0.23-0.32 of their RECALL-query attention on v, and the MLP maps v to
      its class (so a non-copy answer does not keep the induction heads out); on OLMoE one induction head does
      it (0.34) and the two heads with no induction role stay idle;
    - on NeoX one of those heads slowly gains first-token attention on the probe (30-80x by step 10000)
      while staying an induction head (57-64x); on OLMoE no head passes 2x. Layer 0 stays below 12x in the
      first runs but one layer-0 head reaches 29-33x (1000-row probe) while the task ramps in.
    - with 8 heads per layer (NeoX) a spare layer-1 head does become a pure sink (first-token > 1000x,
      induction 3-20x) next to the circuit, but within ~400 steps of the task starting, and only when the task
      starts before the circuit forms: started ~5000 steps after it (fraction 0.25 at lr 3e-4, or 0.5 at lr 1e-3)
      the task is not learned at all (recall accuracy at chance, 0.23-0.27, after 4500 steps), no head passes 9x
      first-token and the circuit weakens (52x -> 36-50x); a late model is no longer plastic enough for it.
    (A variant that recalls the token *before* STORE grew a layer-0 sink as well: a head that copies the
    previous token at STORE only, the Bigram-Backcopy head.)
    """
    out = seqs.copy()
    n, length = out.shape
    for i in np.nonzero(rng.random(n) < p)[0]:
        s = rng.integers(2, length - 12)
        v = rng.integers(FIRST_ORDINARY, vocab)
        out[i, s], out[i, s + 1] = STORE, v
        taken: set[int] = set()
        for _ in range(recalls):
            free = [r for r in range(s + 3, length - 1) if not {r, r + 1} & taken]  # never overwrite a recall
            if not free:  # a STORE late in the row leaves room for fewer recalls
                break
            r = free[rng.integers(len(free))]
            out[i, r], out[i, r + 1] = RECALL, recall_class(v, classes)
            taken |= {r, r + 1}
    return out


def with_bos(rng: np.random.Generator, seqs: np.ndarray, bos_frac: float) -> np.ndarray:
    """Prepend BOS (dropping the last token) on a random `bos_frac` of rows.

    Rows without BOS start on an ordinary token, so a sink must learn "position 0", not "token 0":
    the study's probe batch has a random token at position 0.
    """
    keep = rng.random(len(seqs)) < bos_frac
    out = seqs.copy()
    out[keep, 1:] = seqs[keep, :-1]
    out[keep, 0] = BOS
    return out


def train_batch(rng: np.random.Generator, chain, batch: int, seq_len: int, vocab: int, backcopy: float,
                data, repeat_triggers: float = 0.0, mode: float = 0.0, recall: float = 0.0) -> np.ndarray:
    """One training batch: a `backcopy` fraction of Bigram-Backcopy rows, a `mode` fraction of mode rows,
    the rest repeats (with triggers at rate `repeat_triggers`, store-and-recall in a `recall` fraction)."""
    n_bc = int(round(backcopy * batch))
    n_mode = int(round(mode * batch))
    parts = []
    if batch - n_bc - n_mode:
        rep = repeat_seqs(rng, batch - n_bc - n_mode, seq_len, vocab, data["len_lo"], data["len_hi"],
                          data.get("held_out", ()), data.get("gap_max", 0))
        rep = insert_triggers(rng, rep, repeat_triggers) if repeat_triggers else rep
        parts.append(insert_recall(rng, rep, vocab, recall, data.get("recalls", 1),
                                   data.get("classes", 4)) if recall else rep)
    if n_bc:
        parts.append(backcopy_seqs(rng, chain, n_bc, seq_len, vocab, data.get("p_trigger", 0.1)))
    if n_mode:
        parts.append(mode_seqs(rng, n_mode, seq_len, vocab, data.get("n_modes", 4)))
    return with_bos(rng, np.concatenate(parts), data.get("bos_frac", 1.0))
