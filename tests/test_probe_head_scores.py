"""Induction / previous-token / duplicate-token scores equal explicit loops over eager attention on [BOS] + R + R."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model

from harness.capture.arch import head_layout
from harness.capture.batches import induction_batch
from harness.run import loop
from probes.base import Context
from probes.head_scores import DuplicateTokenScore, InductionScore, PreviousTokenScore

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=5, progress_bar=False)
LENGTHS = (12, 9)


def by_hand(att, ids, r, kind):
    """Mean over examples and queries of A[i, key(i)] for the examples of repeat length r."""
    L, H = len(att), att[0].shape[1]
    queries = range(2, 1 + 2 * r) if kind == "previous" else range(1 + r, 1 + 2 * r)
    back = {"induction": r - 1, "duplicate": r, "previous": 1}[kind]
    out = np.zeros((L, H))
    for layer in range(L):
        for h in range(H):
            out[layer, h] = np.mean([att[layer][n, h, i, i - back].item() for n in ids for i in queries])
    return out


@pytest.mark.parametrize("bos_id", [0, None])
def test_scores_match_eager(arch, bos_id):
    model = tiny_model(arch)
    shared = induction_batch(n=10, seq_len=64, vocab_lo=5, vocab_hi=97)
    cfg = {"name": "tiny", "bos_id": bos_id, "batch": {"vocab_lo": 20, "vocab_hi": 97}}
    kw = {"lengths": LENGTHS, "n": 6, "seed": 1}
    probes = [InductionScore(**kw), PreviousTokenScore(**kw), DuplicateTokenScore(**kw)]
    ctx = Context(head_layout(model.config), shared, cfg)
    groups = loop.group_by_batch(probes, shared, ctx)
    assert len(groups) == 1 and len(groups[0][1]) == 3  # one batch, one forward pass for the three
    batch = groups[0][0]
    res = loop.run_checkpoint(copy.deepcopy(model), groups, model_cfg=cfg, revision="r", runner=RUNNER)

    ids, rep = batch.input_ids, batch.positions["rep_len"]
    assert ids.shape == (12, 1 + 2 * max(LENGTHS))
    for n in range(len(ids)):  # the batch is [BOS] + R + R with R in the model's ordinary range
        r = rep[n]
        assert torch.equal(ids[n, 1:1 + r], ids[n, 1 + r:1 + 2 * r])
        assert ids[n, 1:].min() >= 20 and ids[n, 1:].max() < 97
        assert ids[n, 0] == 0 if bos_id == 0 else ids[n, 0] >= 20
    with torch.no_grad():
        att = model(ids, output_attentions=True).attentions
    for name, kind in [("induction_score", "induction"), ("previous_token", "previous"), ("duplicate_token", "duplicate")]:
        per = {r: by_hand(att, np.flatnonzero(rep == r), r, kind) for r in LENGTHS}
        heads = res[name].heads
        for r in LENGTHS:
            np.testing.assert_allclose(heads[f"score_len{r}"], per[r], rtol=1e-5)
        np.testing.assert_allclose(heads["score"], np.minimum(*per.values()), rtol=1e-5)
        np.testing.assert_array_equal(heads["is_head"], heads["score"] >= 0.4)
