"""The live callbacks inside real training runs on the tiny GPT-NeoX of conftest: a Hugging Face Trainer (in this
process, or a script where W&B must close at exit) and a Lightning Trainer (2 CPU processes, ddp_spawn)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from live_train import SEQ, After, SaveAt, hf_train, overrides
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
STEPS = [0, 8, 32, 64]  # HF: 64 optimizer steps of 2 accumulated micro-batches of 4
HF_TOKENS = 4 * 2 * SEQ  # per optimizer step, one process
LIGHTNING_STEPS = [0, 3, 8, 16]  # tests/live_train.py: 16 steps, 2 ranks x 2 micro-batches of 4
LIGHTNING_TOKENS = 4 * 2 * 2 * SEQ


def script(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "tests" / "live_train.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **(env or {})})


def stored(model_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "summary.json").read_text())
            for p in sorted(model_dir.iterdir()) if (p / "summary.json").is_file()}


@pytest.fixture(scope="module")
def hf_runs(tmp_path_factory):
    """The same seeded run twice, checkpoints saved at the scheduled steps: once with the callback, once without."""
    from harness.live.hf import ProbeCallback

    tmp = tmp_path_factory.mktemp("hf")
    probe, after, plain_after = ProbeCallback("tiny-hf", overrides=overrides(tmp), schedule=STEPS, wandb="off"), \
        After(), After()
    model, losses = hf_train(tmp / "out", [probe, SaveAt(tmp / "ckpts", STEPS), after])
    plain, plain_losses = hf_train(tmp / "plain", [SaveAt(tmp / "plain_ckpts", STEPS), plain_after])
    return SimpleNamespace(tmp=tmp, probe=probe, model=model, losses=losses, after=after.seen, plain=plain,
                           plain_losses=plain_losses, plain_after=plain_after.seen)


def test_hf_trainer_stores_the_scheduled_steps_as_a_sweep_would(hf_runs):
    tmp = hf_runs.tmp
    live = stored(tmp / "results" / "default" / "tiny-hf")
    assert list(live) == sorted(f"step{s}" for s in STEPS)  # exactly the schedule, with accumulation 2
    for name, summary in live.items():
        prov, step = summary["provenance"], int(name[4:])
        assert (prov["source"], prov["trainer"], prov["step"]) == ("live", "transformers", step)
        assert prov["tokens"] == step * HF_TOKENS  # batch 4 x accumulation 2 x one process x 33 tokens

    # The sweep over the checkpoints saved at the same steps of the same run.
    proc = subprocess.run([sys.executable, "-m", "harness", "model=local", f"model.repo={tmp / 'ckpts'}",
                           "revisions=all", "logger=none", *overrides(tmp, "sweep")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    swept = tmp / "results" / "default" / "sweep"
    assert list(stored(swept)) == list(live)
    for name in live:
        a = pd.read_parquet(tmp / "results" / "default" / "tiny-hf" / name / "heads.parquet")
        b = pd.read_parquet(swept / name / "heads.parquet")
        assert list(a.columns) == list(b.columns) and len(a.columns) > 20, name
        for col in a.columns:
            if pd.api.types.is_numeric_dtype(a[col]):
                np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-6, atol=1e-6,
                                           equal_nan=True, err_msg=f"{name} {col}")
            else:
                assert a[col].tolist() == b[col].tolist(), (name, col)


def test_hf_training_is_bit_identical_with_and_without_the_callback(hf_runs):
    assert len(hf_runs.losses) == 64 and hf_runs.losses == hf_runs.plain_losses
    a, b = hf_runs.model.state_dict(), hf_runs.plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for step in STEPS:  # the weights at every probed step too, not only the last
        sa = load_file(hf_runs.tmp / "ckpts" / f"step{step}" / "model.safetensors")
        sb = load_file(hf_runs.tmp / "plain_ckpts" / f"step{step}" / "model.safetensors")
        assert all(torch.equal(sa[k], sb[k]) for k in sa), step
    # After every step, probed ones included: the attention implementation and train mode as training set them.
    assert hf_runs.after == hf_runs.plain_after == [(s, "sdpa", True) for s in range(1, 65)]
    assert hf_runs.probe.prober.probed == STEPS and hf_runs.probe.prober.closed


def test_hf_resume_supersedes_the_later_steps_and_probes_them_again(tmp_path, caplog):
    """A run to step 32 saving checkpoint-16, then the same run resumed from checkpoint-16 into the same store. OLMo:
    the Trainer resumes a GPT-NeoX checkpoint without its output layer (lm_head vs embed_out keys, transformers 5.25)."""
    from harness.live.hf import ProbeCallback

    steps, model_dir = [0, 8, 16, 24, 32], tmp_path / "results" / "default" / "tiny-hf"
    first = ProbeCallback("tiny-hf", overrides=overrides(tmp_path), schedule=steps, wandb="off")
    hf_train(tmp_path / "out", [first], steps=32, save_strategy="steps", save_steps=16, arch="olmo")
    before = {s: pd.read_parquet(model_dir / f"step{s}" / "heads.parquet") for s in steps}
    kept = {s: (model_dir / f"step{s}" / "summary.json").stat().st_mtime_ns for s in (0, 8, 16)}
    again = ProbeCallback("tiny-hf", overrides=overrides(tmp_path), schedule=steps, wandb="off")
    with caplog.at_level("INFO", logger="harness.live"):
        hf_train(tmp_path / "out", [again], steps=32, save_strategy="steps", save_steps=16, arch="olmo",
                 resume=tmp_path / "out" / "checkpoint-16")
    assert "resumed at step 16; superseded 2 later result(s): step24, step32" in caplog.text
    assert again.prober.probed == [24, 32]  # not step 16 again: the resumed weights are the ones stored there
    assert kept == {s: (model_dir / f"step{s}" / "summary.json").stat().st_mtime_ns for s in (0, 8, 16)}
    final = stored(model_dir)
    assert list(final) == sorted(f"step{s}" for s in steps)
    assert not any("superseded" in s["provenance"] for s in final.values())  # replaced as training got there
    for s in (24, 32):  # the resumed run retraces the first one (HF restores the data order and RNG states)
        pd.testing.assert_frame_equal(pd.read_parquet(model_dir / f"step{s}" / "heads.parquet"), before[s])


@pytest.mark.slow
def test_lightning_ddp_spawn_probes_on_rank_0_only(tmp_path):
    proc = script("lightning", tmp_path, "ddp_spawn", timeout=300)  # a hang fails here, at the timeout
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["pid"] != r1["pid"] and r0["global_step"] == r1["global_step"] == 16
    assert r0["batches"] == r1["batches"] == 32  # 16 optimizer steps x 2 accumulated micro-batches on each rank
    assert (r0["prober"], r0["probed"]) == (True, LIGHTNING_STEPS)
    assert (r1["prober"], r1["probed"]) == (False, [])  # rank 1 never held a prober
    assert r0["waited"] == r1["waited"] == LIGHTNING_STEPS  # both met at every scheduled step
    model_dir = tmp_path / "results" / "default" / "TinyLM"  # the default name: the LightningModule's class
    live = stored(model_dir)
    assert list(live) == sorted(f"step{s}" for s in LIGHTNING_STEPS)
    for name, summary in live.items():
        prov = summary["provenance"]
        assert (prov["source"], prov["trainer"], prov["world_size"]) == ("live", "lightning", 2)
        assert prov["tokens"] == int(name[4:]) * LIGHTNING_TOKENS
    assert not list(model_dir.glob("**/*.tmp*"))
    from wandb_offline import find_runs, read_run

    runs = [read_run(r) for r in find_runs(tmp_path)]
    assert [(r.job_type, r.complete) for r in runs] == [("live", True)]  # one W&B run, rank 0's, closed


@pytest.mark.parametrize("kind,mode,env", [
    ("lightning", "model_parallel", {}),  # FSDP2 (Lightning's "fsdp" string needs a GPU)
    ("hf", "fsdp", {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}),  # a one-process
])                                                                          # world: enough for the Trainer's FSDP2 on CPU
def test_sharded_training_is_refused_before_the_first_step(tmp_path, kind, mode, env):
    if env:
        with socket.socket() as s:  # a free port for the one-process group (tests may run side by side)
            s.bind(("127.0.0.1", 0))
            env = {**env, "MASTER_PORT": str(s.getsockname()[1])}
    proc = script(kind, tmp_path, mode, env=env, timeout=120)
    assert proc.returncode != 0
    line = [x for x in proc.stderr.splitlines() if "ShardedModelError" in x][-1]
    assert "shards the model across ranks" in line and "python -m harness watch" in line
    assert not list(tmp_path.glob("results/**/step*"))  # nothing probed, nothing trained to probe


@pytest.mark.parametrize("mode", ["run", "trainer"])
def test_wandb_beside_the_trainers_own_run(tmp_path, mode):
    from wandb_offline import find_runs, iter_records, read_run

    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "trainer_wandb"), "WANDB_PROJECT": "tests"}
    proc = script("hf", tmp_path, mode, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r.job_type: r for r in map(read_run, find_runs(tmp_path))}
    trainer = runs.pop("")  # the Trainer's own run, closed normally at exit
    assert trainer.complete and trainer.exit_code == 0 and trainer.name == "trainer-run"
    assert [h["train/global_step"] for h in trainer.history if "train/loss" in h] == [4, 8, 12, 16]
    if mode == "run":
        live = runs.pop("live")  # ours, separate, closed by the callback
        assert live.complete and live.group == "default" and not runs
        rows = [h for h in live.history if "selectivity.bos_fraction" in h]
        assert [(h["step"], h["tokens"]) for h in rows] == [(0, 0), (8, 8 * HF_TOKENS), (16, 16 * HF_TOKENS)]
        assert not any(k.startswith("circuits/") for h in trainer.history for k in h)
    else:
        assert not runs  # no run of ours
        # Rows of their own in the trainer's run (none overwritten by the next), under the prefix, with their tokens.
        rows = [h for h in trainer.history if "circuits/tiny-hf/selectivity.bos_fraction" in h]
        assert [h["circuits/tiny-hf/tokens"] for h in rows] == [0, 8 * HF_TOKENS, 16 * HF_TOKENS]
        # The trainer's metrics keep the definitions the Trainer gave them: x axis train/global_step.
        defined = metric_definitions(trainer.path, iter_records)
        assert defined.get("*") == "train/global_step" and "train/global_step" in defined


def metric_definitions(path, iter_records) -> dict[str, str]:
    """name or glob -> step metric, from the run's metric records (the last definition of each wins)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = {}
    for payload in iter_records(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        if rec.WhichOneof("record_type") == "metric":
            m = rec.metric
            out[m.name or m.glob_name] = m.step_metric
    return out


def test_importing_the_callbacks_changes_nothing_in_the_process():
    code = """
import json, logging, warnings
import torch, transformers, lightning, accelerate
from transformers.utils import logging as hf_logging
def snapshot():
    levels = {n: getattr(l, "level", None) for n, l in logging.Logger.manager.loggerDict.items()
              if not n.startswith("harness")}
    return {"levels": levels, "root": logging.getLogger().level, "filters": repr(warnings.filters),
            "hf_verbosity": hf_logging.get_verbosity(), "hf_bars": hf_logging.is_progress_bar_enabled(),
            "threads": torch.get_num_threads(), "dtype": str(torch.get_default_dtype()),
            "grad": torch.is_grad_enabled(), "handlers": len(logging.getLogger().handlers)}
before = snapshot()
import harness.live.hf, harness.live.lightning, harness.live.prober
after = snapshot()
changed = {n: (v, after["levels"].get(n)) for n, v in before.pop("levels").items() if after["levels"].get(n) != v}
after.pop("levels")
print(json.dumps({**changed, **{k: (before[k], after[k]) for k in before if before[k] != after[k]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}  # what changed: (before, after)
