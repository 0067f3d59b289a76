"""Sink rate equals explicit loops over eager attention, on the induction batch and on natural text."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import VOCAB, tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from harness.capture.arch import head_layout
from harness.capture.batches import induction_batch
from harness.run import loop
from probes.base import Context
from probes.sink_rate import DEFAULT_TEXT, SinkRate

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)


def alpha_by_hand(model, ids, per_seq=False):
    """(L, H) mean over sequences and queries i >= 1 of A[i, 0]; per_seq: (N, L, H), one alpha per sequence."""
    with torch.no_grad():
        att = model(ids, output_attentions=True).attentions
    N, T = ids.shape
    per = np.array([[[np.mean([att[layer][n, h, i, 0].item() for i in range(1, T)]) for h in range(att[0].shape[1])]
                     for layer in range(len(att))] for n in range(N)])
    return per if per_seq else per.mean(0)


def run(model, probe, batch, cfg):
    ctx = Context(head_layout(model.config), batch, cfg)
    return loop.run_checkpoint(model, loop.group_by_batch([probe], batch, ctx), model_cfg=cfg, revision="r",
                               runner=RUNNER)[probe.name]


@pytest.mark.parametrize("bos", [False, True])
def test_sink_matches_eager(arch, bos):
    model = tiny_model(arch)
    batch = induction_batch(n=20, seq_len=64, vocab_lo=5, vocab_hi=97, prepend_bos=bos, bos_id=0)
    eps = 0.06  # near the tiny models' alphas, so both classes occur
    res = run(copy.deepcopy(model), SinkRate(epsilon=eps), batch, {"name": "tiny", "bos_id": 0})
    per = alpha_by_hand(model, batch.input_ids, per_seq=True)
    want = per.mean(0)
    np.testing.assert_allclose(res.heads["alpha"], want, rtol=1e-5)
    assert res.scalars["rate_per_seq"] == pytest.approx((per > eps).mean())
    np.testing.assert_array_equal(res.heads["is_sink"], want > eps)
    assert res.scalars["rate"] == pytest.approx((want > eps).mean())
    assert "alpha_text" not in res.heads  # a model without a tokenizer: skipped, no failure


def test_sink_on_natural_text(arch, tmp_path):
    """A checkpoint folder with a tokenizer: the natural-text windows are scored too."""
    words = sorted(set(DEFAULT_TEXT.replace(",", " ").replace(".", " ").replace(";", " ").split()))[: VOCAB - 2]
    tok = Tokenizer(models.WordLevel({"[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    tiny_model(arch).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = induction_batch(n=10, seq_len=64, vocab_lo=5, vocab_hi=97, prepend_bos=True, bos_id=0)
    res = run(copy.deepcopy(model), SinkRate(text_len=40, text_n=3), batch, {"name": "tiny", "bos_id": 0})
    ids = tok(DEFAULT_TEXT, add_special_tokens=False)["input_ids"]
    windows = torch.tensor([[0] + ids[i * 39:(i + 1) * 39] for i in range(3)])  # BOS prepended, as the batch does
    want = alpha_by_hand(model, windows)
    np.testing.assert_allclose(res.heads["alpha_text"], want, rtol=1e-5)
    assert res.scalars["rate_text"] == pytest.approx((want > 0.3).mean())
    assert res.info["text_windows"] == 3
