"""The selectivity screen equals the study's formula applied by hand to eager attention maps."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model

from harness import loop
from harness.arch import head_layout
from harness.data import induction_batch
from probes.base import Context
from probes.selectivity import Selectivity

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)  # 7 does not divide 30


def by_hand(model, batch):
    """Explicit loops over examples, layers and heads of eager output_attentions=True."""
    with torch.no_grad():
        att = model(batch.input_ids, output_attentions=True).attentions
    N, T = batch.input_ids.shape
    L, H = len(att), att[0].shape[1]
    base_pos = batch.fixed["baseline"]
    cls = {c: np.zeros((L, H)) for c in ("induction", "duplicate", "previous_token", "self", "first_token", "local", "base")}
    for n in range(N):
        ab = batch.positions["duplicate"][n]
        for layer in range(L):
            for h in range(H):
                row = att[layer][n, h, T - 1].double().numpy()
                cls["induction"][layer, h] += row[ab + 1] / N
                cls["duplicate"][layer, h] += row[ab] / N
                cls["previous_token"][layer, h] += row[T - 2] / N
                cls["self"][layer, h] += row[T - 1] / N
                cls["first_token"][layer, h] += row[0] / N
                cls["local"][layer, h] += np.mean([row[T - k] for k in (3, 4, 5, 6)]) / N
                cls["base"][layer, h] += np.mean([row[p] for p in base_pos]) / N
    return {c: v / np.maximum(cls["base"], 1e-8) for c, v in cls.items() if c != "base"}


@pytest.mark.parametrize("bos", [False, True])
def test_selectivity_matches_eager(arch, bos):
    model = tiny_model(arch)
    batch = induction_batch(n=30, seq_len=64, vocab_lo=5, vocab_hi=97, prepend_bos=bos, bos_id=0)
    want = by_hand(model, batch)
    probe = Selectivity(assign=1.0, induction=1.0, prev_token=1.0, bos=1.0)  # low thresholds: exercise the logic
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
    res = loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch([probe], batch, ctx),
                              model_cfg={"name": "tiny"}, revision="r", runner=RUNNER)["selectivity"]
    for c, v in want.items():
        np.testing.assert_allclose(res.heads[c], v, rtol=1e-5)
    stacked = np.stack([want[c] for c in ("induction", "duplicate", "previous_token", "self", "first_token", "local")])
    assert res.scalars["bos_fraction"] == pytest.approx((want["first_token"] >= 1.0).mean())
    np.testing.assert_array_equal(res.heads["bos"], want["first_token"] >= 1.0)
    np.testing.assert_array_equal(res.heads["induction_circuit"], want["induction"] >= 1.0)
    best_is_prev = stacked.argmax(0) == 2
    np.testing.assert_array_equal(res.heads["prev_token_circuit"], best_is_prev & (want["previous_token"] >= 1.0))
