"""End to end: tiny trained checkpoints as local revisions -> `python -m harness` -> store + offline W&B."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def save_revisions(arch: str, folder: Path, steps=(0, 2, 6)) -> None:
    """A few SGD steps on repeated random sequences; a checkpoint folder per step."""
    model = tiny_model(arch, attn="sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(max(steps) + 1):
        if step in steps:
            model.save_pretrained(folder / f"step{step}")
        r = torch.randint(5, 97, (8, 16), generator=gen)
        ids = torch.cat([torch.zeros(8, 1, dtype=torch.long), r, r], 1)
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()


def harness(*overrides, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *overrides], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "WANDB_SILENT": "true", **(env or {})}, timeout=600)


PREFIXES = ("selectivity.", "pr.", "null.", "induction_score.", "previous_token.", "duplicate_token.", "sink.",
            "ablation.")


def common(tmp: Path, ckpts: Path, name: str, probe: str = "all"):
    return ["model=local", f"model.repo={ckpts}", f"model.name={name}", "model.batch.vocab_lo=5",
            "model.batch.vocab_hi=97", "model.batch.seq_len=64", "model.bos_id=0", "data.n=40",
            "revisions=all", f"probe={probe}", "runner.device=cpu", "runner.progress_bar=false",
            "runner.dtype=float32", f"paths.root_dir={tmp}", "logger.mode=offline",
            *(["probe.pr.n=20", "probe.null.draws=50"] if probe == "all" else [])]


@pytest.mark.parametrize("arch", ["gpt_neox", "olmo", "olmoe"])
def test_local_revisions_to_store_and_wandb(tmp_path, arch):
    from wandb_offline import find_runs, read_run

    ckpts = tmp_path / "ckpts"
    save_revisions(arch, ckpts)
    proc = harness(*common(tmp_path, ckpts, f"tiny-{arch}"))
    assert proc.returncode == 0, proc.stderr[-3000:]

    model_dir = tmp_path / "results" / "default" / f"tiny-{arch}"
    revs = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
    assert revs == ["step0", "step2", "step6"]
    summaries = {r: json.loads((model_dir / r / "summary.json").read_text()) for r in revs}
    for r, s in summaries.items():
        heads = pd.read_parquet(model_dir / r / "heads.parquet")
        assert len(heads) == 2 * 4 and {"layer", "head", "selectivity.induction", "selectivity.first_token",
                                         "selectivity.best_class", "selectivity.bos"} <= set(heads.columns)
        assert all(any(c.startswith(p) for c in heads.columns) for p in PREFIXES), heads.columns
        prov = s["provenance"]
        assert prov["revision"] == r and prov["step"] == int(r[4:]) and len(prov["weights_hash"]) == 64
        assert prov["packages"]["torch"].startswith("2.") and prov["dtype"] == "float32"
    assert (model_dir / "trajectory.png").exists()
    findings = json.loads((model_dir / "findings.json").read_text())  # every job analyses its model at the end
    assert findings["revisions"] == revs and len(findings["bos_fraction"]) == 3

    runs = find_runs(tmp_path / "wandb_runs")
    assert len(runs) == 1
    run = read_run(runs[0])
    rows = [h for h in run.history if "selectivity.bos_fraction" in h]
    assert len(rows) == 3
    for row, r in zip(sorted(rows, key=lambda h: h["step"] if "step" in h else h["_step"]), revs):
        for k, v in summaries[r]["scalars"].items():
            assert row[k] == pytest.approx(v, rel=1e-12, nan_ok=True), (r, k)
    assert run.config["model"]["name"] == f"tiny-{arch}"
    traj = [h["trajectory"] for h in run.history if "trajectory" in h]  # one table, logged once at the end
    assert len(traj) == 1
    table = json.loads((runs[0] / "files" / traj[0]["path"]).read_text())
    assert table["columns"] == list(pd.read_parquet(model_dir / "trajectory.parquet").columns)
    assert len(table["data"]) == 3 * 2 * 4

    # A second run reuses the complete results instead of recomputing them.
    before = {r: (model_dir / r / "summary.json").stat().st_mtime_ns for r in revs}
    proc = harness(*common(tmp_path, ckpts, f"tiny-{arch}"), "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert before == {r: (model_dir / r / "summary.json").stat().st_mtime_ns for r in revs}
    assert "reusing" in proc.stderr + proc.stdout


@pytest.mark.parametrize("override,line", [
    ("model=no-such-model", "error: model=no-such-model: no such option (valid: amber, crfm-gpt2-small, "
                            "fineweb-edu-ablation, local, olmo-1b-0724, "),
    ("revisions=sometimes", "error: revisions=sometimes: no such option (valid: all, final, list, log, paper)"),
    ("probe=[selectivity,nul_calibration]", "error: probe=nul_calibration: no such option (did you mean "
                                            "null_calibration? valid: ablation, all, "),
    ("model=zoo-neox,pythia-1bb", "error: model=pythia-1bb: no such option (did you mean pythia-1b? "),
    ("runner=gpux", "error: runner=gpux: no such option (did you mean gpu? valid: cpu, default, gpu)"),
])
def test_unknown_names_fail_short(override, line):
    proc = harness(override, "logger=none")
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), proc.stderr


def test_bad_vocab_and_revision_fail_short(tmp_path):
    ckpts = tmp_path / "ckpts"
    save_revisions("gpt_neox", ckpts, steps=(0,))
    base = common(tmp_path, ckpts, "tiny")
    proc = harness(*base, "model.batch.vocab_hi=5000", "logger=none")
    assert proc.returncode == 2 and "vocab" in proc.stderr and "Traceback" not in proc.stderr
    proc = harness(*base, "revisions=list", "revisions.names=[step7]", "logger=none")
    assert proc.returncode == 2 and "step7" in proc.stderr and "step0" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_checkpoint_fails_short_and_keeps_earlier_results(tmp_path):
    ckpts = tmp_path / "ckpts"
    save_revisions("gpt_neox", ckpts, steps=(0, 2))
    weights = ckpts / "step2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated download
    proc = harness(*common(tmp_path, ckpts, "tiny", probe="selectivity"), "logger=none")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "step2" in proc.stderr and "cannot load" in proc.stderr and str(weights) in proc.stderr
    assert "re-save that checkpoint" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "results" / "default" / "tiny" / "step0" / "summary.json").exists()


def test_staged_names_reach_provenance_and_the_trajectory_in_order(tmp_path):
    """OLMo-2 style names in a local folder: stage 2 restarts the step count, so the trajectory is ordered by
    (stage, step) and stage 2's tokens continue from stage 1's last checkpoint (worked out by hand here)."""
    ckpts = tmp_path / "ckpts"
    save_revisions("olmo", ckpts)
    names = {"step0": "stage1-step0", "step2": "stage1-step2", "step6": "stage2-ingredient1-step1"}
    for old, new in names.items():
        (ckpts / old).rename(ckpts / new)
    proc = harness(*common(tmp_path, ckpts, "staged", probe="selectivity"), "model.tokens_per_step=1000",
                   "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = tmp_path / "results" / "default" / "staged"
    prov = {n: json.loads((model_dir / n / "summary.json").read_text())["provenance"] for n in names.values()}
    assert [(p["stage"], p["ingredient"], p["step"], p["tokens"]) for p in prov.values()] == [
        (1, None, 0, 0), (1, None, 2, 2000), (2, 1, 1, 3000)]
    findings = json.loads((model_dir / "findings.json").read_text())
    assert findings["revisions"] == list(names.values())
