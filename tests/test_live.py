"""The live core (harness.live): schedules and budget worked out by hand, a training run left as it was, the store
equal to a sweep over the same weights saved as checkpoints, findings equal to `harness analyze`, alerts once each
(alerts.jsonl and the offline W&B run), and a crash + resume that ends as an uninterrupted run."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_config
from test_e2e import harness
from transformers import AutoModelForCausalLM

from harness.live.prober import LiveProber
from harness.live.schedule import Schedule, ScheduleError, steps

# ---------------------------------------------------------------- schedules, by hand

def test_schedules_by_hand():
    assert steps("every:16", 64) == [0, 16, 32, 48, 64]
    assert steps("every:30", 64) == [0, 30, 60, 64]  # the last step always
    assert steps("pythia", 3000) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]
    assert steps([5, 1, 5], None) == [1, 5]
    log = steps("log", 1000)
    assert log[0] == 0 and log[-1] == 1000 and 1 in log
    dense = [s for s in log if 2 <= s <= 30]  # the window 0.2%-3% of 1000 steps: 8 more steps inside it
    assert len(dense) >= 8 and dense == sorted(set(dense))
    assert Schedule("log").due(0) and Schedule("log").due(64) and not Schedule("log").due(65)  # unbounded: 2^k
    for bad in ("every:0", "sometimes", [1, -2]):
        with pytest.raises(ScheduleError):
            steps(bad, 100)


def test_budget_moves_probes_on_and_keeps_the_last():
    """A probe costs 100 forward tokens, a step trains 10 tokens (30 forward tokens of compute), budget 0.5: a probe
    at step k fits when (spent + 100) / (30 k) <= 0.5. Step 0 (nothing trained) is free to start with; then
    200 <= 15 k first holds at k = 14; then 400 <= 15 k at k = 27 > 20, but 20 is the last step."""
    s = Schedule("every:1", total=20, max_overhead=0.5, probe_tokens=100)
    probed = []
    for k in range(21):
        if s.due(k) and s.affordable(k, 10 * k):
            s.spend()
            probed.append(k)
    assert probed == [0, 14, 20]


# ---------------------------------------------------------------- a small training run

OVERRIDES = ["probe=selectivity", "model.batch.vocab_lo=5", "model.batch.vocab_hi=97", "model.batch.seq_len=64",
             "model.bos_id=0", "data.n=40", "runner.dtype=float32"]


def make_model():
    cfg = tiny_config("olmo")
    cfg.attention_dropout = 0.1  # dropout draws from torch's generator: probing must not shift its stream
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").train()


def batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)  # the data of step k, whatever ran before
    r = torch.randint(5, 97, (8, 16), generator=g)
    return torch.cat([torch.zeros(8, 1, dtype=torch.long), r, r], 1)


def train(steps_: range, model, opt, prober=None, save=None, after=None):
    losses = []
    for step in steps_:
        if prober is not None:
            prober.observe(model, step)
            assert model.training and model.config._attn_implementation == "sdpa"
        if save is not None and step in save[1]:
            model.save_pretrained(save[0] / f"step{step}")
        if after is not None and step == after:
            return losses
        ids = batch(step)
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def prober_for(tmp: Path, name: str, **kw) -> LiveProber:
    return LiveProber(name, overrides=[*OVERRIDES, f"paths.root_dir={tmp}", *kw.pop("overrides", ["logger=none"])],
                      total_steps=12, tokens_per_step=8 * 33, schedule=kw.pop("schedule", "every:4"), **kw)


def test_probing_leaves_training_as_it_was(tmp_path):
    runs = []
    for with_prober in (False, True):
        model = make_model()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        torch.manual_seed(1)
        prober = prober_for(tmp_path, "same") if with_prober else None
        losses = train(range(13), model, opt, prober)
        runs.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
    (l0, w0), (l1, w1) = runs
    assert l0 == l1
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    stored = sorted(p.name for p in (tmp_path / "results" / "default" / "same").glob("step*"))
    assert stored == ["step0", "step12", "step4", "step8"]


def test_live_store_equals_a_sweep_of_the_saved_checkpoints_and_findings_equal_analyze(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    prober = prober_for(tmp_path / "live", "run")
    train(range(13), model, opt, prober, save=(tmp_path / "ckpts", {0, 4, 8, 12}))
    prober.finish(model, 12)
    live = tmp_path / "live" / "results" / "default" / "run"
    findings = json.loads((live / "findings.json").read_text())
    assert findings["status"] == "final" and findings["revisions"] == ["step0", "step4", "step8", "step12"]

    proc = harness("model=local", f"model.repo={tmp_path / 'ckpts'}", "model.name=run", *OVERRIDES,
                   "revisions=all", "logger=none", "runner.progress_bar=false", f"paths.root_dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = tmp_path / "sweep" / "results" / "default" / "run"
    for step in (0, 4, 8, 12):
        a, b = (pd.read_parquet(d / f"step{step}" / "heads.parquet") for d in (live, sweep))
        assert list(a.columns) == list(b.columns)
        for col in a.columns:
            if a[col].dtype.kind == "f":
                assert (a[col] - b[col]).abs().max() <= 1e-6, (step, col)
            else:
                assert a[col].tolist() == b[col].tolist(), (step, col)
        prov = json.loads((live / f"step{step}" / "summary.json").read_text())["provenance"]
        assert prov["source"] == "live" and prov["step"] == step and prov["tokens"] == step * 8 * 33

    proc = harness("analyze", f"paths.root_dir={tmp_path / 'live'}", "models=[run]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((live / "findings.json").read_text()) == findings


# ---------------------------------------------------------------- alerts

def test_alerts_once_each_in_the_file_and_the_wandb_run(tmp_path, capsys):
    """Hand-wired weights (an induction head L1H0 and a first-token head) swapped in and out of a model in training:
    the circuit forms at step 4, is stable at steps 4 and 8 (k = 2), and its head is lost at step 12."""
    from handwired import handwired_model
    from wandb_offline import find_runs, read_run

    wired = handwired_model("olmo", seq_len=64, vocab_size=97, d_model=128)
    blank = handwired_model("olmo", seq_len=64, vocab_size=97, d_model=128, seed=1)
    with torch.no_grad():
        for p in blank.parameters():  # same shapes, no circuit: small random weights
            p.normal_(0, 0.02)
    blank.set_attn_implementation("sdpa")
    wired.set_attn_implementation("sdpa")
    prober = prober_for(tmp_path, "wired", stable_k=2, overrides=["logger.mode=offline"])
    for step, model in ((0, blank), (4, wired), (8, wired), (12, blank)):
        prober.observe(model.train(), step)
    prober.finish()
    lines = [json.loads(x) for x in (prober.model_dir / "alerts.jsonl").read_text().splitlines()]
    events = [a["event"] for a in lines]
    assert events[0] == "induction_circuit" and lines[0]["step"] == 4 and lines[0]["heads"] == ["L1H0"]
    assert "circuit_stable" in events and "head_lost:L1H0" in events and len(events) == len(set(events))
    printed = capsys.readouterr().out
    assert all(a["text"] in printed for a in lines)
    (run,) = [read_run(r) for r in find_runs(tmp_path / "wandb_runs")]
    assert run.job_type == "live" and run.complete
    assert [a["text"] for a in run.alerts] == [a["text"] for a in lines]
    assert [h["step"] for h in run.history if "step" in h and "selectivity.bos_fraction" in h] == [0, 4, 8, 12]


# ---------------------------------------------------------------- crash and resume

def test_resume_after_a_crash_ends_as_an_uninterrupted_run(tmp_path):
    # Every head a circuit and a BOS head: alerts from step 0 on.
    low = {"overrides": ["logger=none", "thresholds.induction=0.5", "thresholds.bos=0.5", "thresholds.assign=0.5"]}
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    whole = prober_for(tmp_path / "whole", "run", **low)
    train(range(13), model, opt, whole)
    whole.finish(model, 12)

    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    first = prober_for(tmp_path / "crash", "run", **low)
    state = {}

    class Saver:  # the trainer's checkpoint at step 4, then a crash after step 8 was probed
        def observe(self, m, step):
            if step == 4:
                state.update(model={k: v.clone() for k, v in m.state_dict().items()},
                             opt=copy.deepcopy(opt.state_dict()), rng=torch.get_rng_state())
            first.observe(m, step)

    train(range(13), model, opt, Saver(), after=9)
    first.close()  # the process dies; nothing final is written
    model = make_model()
    model.load_state_dict(state["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])  # dropout's stream, as a trainer's checkpoint restores it
    again = prober_for(tmp_path / "crash", "run", **low)
    assert again.resume(4) == ["step8"]
    from harness.analysis import analyze_model

    mid = analyze_model(again.model_dir, provisional=True)  # until training reaches step 8 again
    assert mid["revisions"] == ["step0", "step4"] and mid["status"] == "provisional"
    assert any(s.startswith("step8 (superseded") for s in mid["skipped"])
    train(range(4, 13), model, opt, again)
    again.finish(model, 12)

    a, b = (d / "results" / "default" / "run" for d in (tmp_path / "whole", tmp_path / "crash"))
    for step in (0, 4, 8, 12):
        assert pd.read_parquet(a / f"step{step}" / "heads.parquet").equals(
            pd.read_parquet(b / f"step{step}" / "heads.parquet")), step
        assert "superseded" not in json.loads((b / f"step{step}" / "summary.json").read_text())["provenance"]
    fa, fb = (json.loads((d / "findings.json").read_text()) for d in (a, b))
    assert {k: v for k, v in fa.items() if k != "model"} == {k: v for k, v in fb.items() if k != "model"}
    ea, eb = ([json.loads(x)["event"] for x in (d / "alerts.jsonl").read_text().splitlines()] for d in (a, b))
    assert ea and ea == eb  # the same events, none sent twice


def test_a_non_finite_probe_is_stored_as_failed_and_alerted_once(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.fill_(float("inf"))
    prober = prober_for(tmp_path, "broken")
    summary = prober.observe(model, 0)
    assert summary["status"] == "failed" and "non-finite" in summary["reason"]
    assert model.training and model.config._attn_implementation == "sdpa"
    prober.observe(model, 4)
    lines = [json.loads(x) for x in (prober.model_dir / "alerts.jsonl").read_text().splitlines()]
    assert [a["event"] for a in lines] == ["probe_failed:step0", "probe_failed:step4"]
    assert "check this checkpoint's weights for inf/NaN" in lines[0]["text"] and lines[0]["level"] == "ERROR"
    prober.close()


def test_a_resumed_training_continues_its_wandb_run(tmp_path):
    from wandb_offline import find_runs, read_run

    model = make_model()
    first = prober_for(tmp_path, "resumed", overrides=["logger.mode=offline"])
    first.observe(model, 0)
    first.close()  # the training process dies
    again = prober_for(tmp_path, "resumed", overrides=["logger.mode=offline"])
    again.resume(0)
    again.observe(model, 4)
    again.finish()
    runs = [read_run(r) for r in find_runs(tmp_path / "wandb_runs")]
    assert len(runs) == 2 and runs[0].run_id == runs[1].run_id  # one W&B run, written by two processes
    assert json.loads((again.model_dir / "live.json").read_text())["wandb_run_id"] == runs[0].run_id
