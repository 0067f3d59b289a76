"""Participation ratio equals torch.linalg.svd / the centred covariance of the stacked z; probe=paper reproduces the study."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from hydra import compose, initialize
from hydra.utils import instantiate
from reference import last_query_rows, study_inputs, study_selectivity

from harness.capture.arch import head_layout, out_projections
from harness.capture.batches import induction_batch
from harness.run import loop
from harness.run.job import build_probes
from probes.base import Context
from probes.participation_ratio import ParticipationRatio

RUNNER = SimpleNamespace(device="cpu", dtype="float32", batch_size=7, progress_bar=False)


def stacked_z(model, ids, positions):
    """Per layer, (N, H, d_head) from a forward pre-hook on the output projection (its input is z)."""
    H = model.config.get_text_config().num_attention_heads  # a multimodal wrapper nests it
    got = []
    hooks = [m.register_forward_pre_hook(lambda m, args: got.append(args[0].detach())) for m in out_projections(model)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    z = [x[:, -1:] if positions == "last" else x for x in got]  # (B, T', H*d)
    return [x.reshape(-1, H, x.shape[-1] // H).double() for x in z]


def by_hand(model, ids, positions):
    out = {"entropy": [], "classic": []}
    for z in stacked_z(model, ids, positions):
        ent, cla = [], []
        for h in range(z.shape[1]):
            m = z[:, h]
            s = torch.linalg.svd(m).S
            p = s**2 / (s**2).sum()
            p = p[p > 0]
            ent.append(torch.exp(-(p * p.log()).sum()).item())
            lam = torch.linalg.eigvalsh(torch.cov(m.T))
            cla.append((lam.sum() ** 2 / (lam**2).sum()).item())
        out["entropy"].append(ent)
        out["classic"].append(cla)
    return {k: np.array(v) for k, v in out.items()}


def run(model, probes, batch, model_cfg=None):
    cfg = model_cfg or {"name": "tiny"}
    ctx = Context(head_layout(model.config), batch, cfg)
    return loop.run_checkpoint(copy.deepcopy(model), loop.group_by_batch(probes, batch, ctx),
                               model_cfg=cfg, revision="r", runner=RUNNER)


@pytest.mark.parametrize("positions,n", [("last", 20), ("all", None)])
def test_pr_matches_svd(arch, positions, n):
    model = tiny_model(arch)
    batch = induction_batch(n=30, seq_len=64, vocab_lo=5, vocab_hi=97)
    res = run(model, [ParticipationRatio(positions=positions, n=n)], batch)["pr"]
    want = by_hand(model, batch.input_ids[: n or 30], positions)
    np.testing.assert_allclose(res.heads["entropy"], want["entropy"], rtol=1e-5)
    np.testing.assert_allclose(res.heads["classic"], want["classic"], rtol=1e-5)
    d = model.config.hidden_size // model.config.num_attention_heads
    assert ((res.heads["entropy"] >= 1) & (res.heads["entropy"] <= d + 1e-9)).all()


def test_first_n_examples_are_the_n_batch():
    """pr.n reads the first n examples of the shared batch: the study's smaller batch (same seed)."""
    big, small = induction_batch(n=30, seq_len=64, vocab_lo=5, vocab_hi=97), induction_batch(n=12, seq_len=64, vocab_lo=5, vocab_hi=97)
    assert torch.equal(big.input_ids[:12], small.input_ids)
    for k in small.positions:
        np.testing.assert_array_equal(big.positions[k][:12], small.positions[k])


def _compose(overrides):
    with initialize(version_base=None, config_path="../conf"):
        return compose("config", overrides=overrides)


def test_paper_preset_matches_study(arch):
    cfg = _compose(["probe=paper", "data.n=30", "data.seq_len=64", "data.vocab_lo=5", "data.vocab_hi=97",
                    "probe.pr.n=20", "probe.null.draws=20"])
    assert list(cfg.probe) == ["selectivity", "pr", "null"]
    assert _compose(["probe=paper"]).probe.pr.n == 500 and cfg.probe.pr.positions == "last"
    probes, batch = build_probes(cfg.probe), instantiate(cfg.data)
    model = tiny_model(arch)
    res = run(model, probes, batch)
    inp = study_inputs(30, 64, 5, 97, bos_id=0 if cfg.data.prepend_bos else None)  # rebuilt from docs/method.md
    want = study_selectivity(last_query_rows(model, inp.ids), inp)
    for c, v in want.items():
        np.testing.assert_allclose(res["selectivity"].heads[c], v, rtol=1e-5)
    np.testing.assert_allclose(res["pr"].heads["entropy"], by_hand(model, batch.input_ids[:20], "last")["entropy"], rtol=1e-5)
    assert set(res["null"].scalars) == {"p99", "max", "t_recall", "t_precision"}


def test_all_preset_builds_every_probe():
    cfg = _compose(["probe=all"])
    names = [p.name for p in build_probes(cfg.probe)]
    conf = Path(__file__).parent.parent / "conf" / "probe"
    assert len(names) == len({f.stem for f in conf.glob("*.yaml")} - {"all", "default", "paper"})
    assert {"selectivity", "pr", "null", "induction_score", "previous_token", "duplicate_token", "sink", "ablation"} <= set(names)
