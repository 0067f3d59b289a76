"""The zoo trainer probes each suite while it trains (harness.zoo.live), on smoke builds of the real trainer:
exactly the snapped schedule's steps stored as a sweep stores them (and reused by one), the build unchanged."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness.sources import hubcache
from harness.zoo import build, checkpoint_steps
from harness.zoo.live import snapped

ROOT = Path(__file__).resolve().parents[1]
REPO = "circuit-trajectories/zoo-neox"
SMALL = ["logger=none", "data.n=40", "data.seq_len=64", "runner.device=cpu"]  # the probe config, live and sweep
RECIPE = ["suites=[neox]", "smoke_recipe.steps=40", "smoke_recipe.ckpt_every=10"]  # checkpoints 0 1 2 4 8 10 16 20 30 32 40
LIVE = ["live.enabled=true", "live.n=4", "live.dense_n=0"]  # log steps 0 1 3 12 40 -> checkpoints 0 1 2 10 40
STEPS = [0, 1, 2, 10, 40]


def zoo_cfg(cache, results=None, *overrides):
    live = [*LIVE, f"live.overrides={json.dumps([f'paths.results_dir={results}', *SMALL])}"] if results else []
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "zoo"), version_base="1.3"):
        return compose("build", overrides=[f"cache_dir={cache}", "smoke=true", "progress=false", "jobs=1", *RECIPE,
                                           *live, *overrides])


def refs(cache) -> dict[str, str]:
    return {p.name: p.read_text() for p in (hubcache.repo_folder(REPO, cache) / "refs").iterdir()}


def stored(results) -> dict[str, dict]:
    folder = Path(results) / "zoo" / "zoo-neox"
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/summary.json")}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The same smoke recipe built with live probing and without."""
    root = tmp_path_factory.mktemp("live")
    (live,) = build(zoo_cfg(root / "hub-live", root / "results"))
    (plain,) = build(zoo_cfg(root / "hub-plain"))
    return root, live, plain


def test_the_schedule_is_snapped_to_published_checkpoints():
    ckpts = checkpoint_steps(40, 10)
    assert snapped({"schedule": "log", "n": 4, "dense_n": 0}, 40, ckpts) == STEPS
    assert snapped({"schedule": "every:15"}, 40, ckpts) == [0, 16, 30, 40]  # 15 -> 16
    assert snapped({"schedule": [3, 5]}, 40, ckpts) == [2, 4, 40]  # ties go to the earlier; the last step always
    every = snapped({}, 11500, checkpoint_steps(11500, 125))  # the demo's NeoX schedule: log, n=16, dense_n=8
    assert every[0] == 0 and every[-1] == 11500 and set(every) <= set(checkpoint_steps(11500, 125))


def test_store_holds_the_snapped_steps_with_the_published_commits(builds):
    root, live, _ = builds
    results = stored(root / "results")
    assert sorted(results, key=lambda r: int(r[4:])) == [f"step{s}" for s in STEPS]
    published = refs(root / "hub-live")
    for name, s in results.items():
        prov = s["provenance"]
        assert prov["source"] == "live" and prov["commit"] == published[name] and prov["repo"] == REPO
        assert not prov.get("superseded") and s.get("status") != "failed"
    assert live["live"]["probes"] == len(STEPS) and live["live"]["steps"] == STEPS


def test_probing_does_not_change_the_build(builds):
    root, live, plain = builds
    assert live["recipe_hash"] == plain["recipe_hash"] and live["commit"] == plain["commit"]
    assert refs(root / "hub-live") == refs(root / "hub-plain")  # every revision's weights, bit for bit
    for step in (10, 40):
        a, b = ((hubcache.resolve(REPO, f"step{step}", root / h) / "model.safetensors").read_bytes()
                for h in ("hub-live", "hub-plain"))
        assert a == b


def test_findings_are_final_and_alerts_recorded_after_the_build(builds):
    root, live, _ = builds
    folder = root / "results" / "zoo" / "zoo-neox"
    assert (folder / "alerts.jsonl").is_file()  # empty at smoke scale: no circuit in 40 steps
    assert json.loads((folder / "findings.json").read_text())["status"] == "final" == live["live"]["status"]
    assert (folder / "trajectory.png").is_file()


def test_a_sweep_afterwards_reuses_every_live_result(builds, tmp_path):
    root, _, _ = builds
    results = tmp_path / "results"  # a copy: the other tests read the build's store
    shutil.copytree(root / "results", results)
    before = {p: p.stat().st_mtime_ns for p in results.glob("zoo/zoo-neox/*/summary.json")}
    env = {**os.environ, "HF_HUB_CACHE": str(root / "hub-live"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "harness", "experiment=zoo", "model=zoo-neox", *SMALL, "runner.progress_bar=false",
           f"paths.root_dir={tmp_path}"]  # results in <root>/results, Hydra's logs beside them
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    for s in STEPS:
        assert f"zoo-neox step{s}: reusing" in log, log[-3000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # not one live result written again
    assert len(stored(results)) == len(refs(root / "hub-live"))  # the other revisions probed beside them


def test_partial_then_full_build_stores_what_a_straight_build_stores(builds, tmp_path):
    """until=20 probes the scheduled steps up to 20 (findings provisional); the build carried on to the end
    probes the rest: the same results as the straight build, findings final, no alert twice."""
    root, _, _ = builds
    (part,) = build(zoo_cfg(tmp_path / "hub", tmp_path / "results", "until=20"))
    assert part["status"] == "partial" and sorted(stored(tmp_path / "results")) == ["step0", "step1", "step10",
                                                                                   "step2"]
    folder = tmp_path / "results" / "zoo" / "zoo-neox"
    assert json.loads((folder / "findings.json").read_text())["status"] == "provisional"
    (rest,) = build(zoo_cfg(tmp_path / "hub", tmp_path / "results"))
    assert rest["resumed_from"] == 20 and rest["live"]["probes"] == 1  # step 40: 10 and below not probed again
    assert_same_results(tmp_path / "results", root / "results")
    assert json.loads((folder / "findings.json").read_text())["status"] == "final"
    events = [json.loads(line)["event"] for line in (folder / "alerts.jsonl").read_text().splitlines()]
    assert len(events) == len(set(events))


def test_a_built_suite_is_probed_from_its_published_revisions_once(builds, tmp_path):
    """Built without live probing, then built again with it: skipped, and the scheduled steps probed from the
    hub cache (the same results as live); a third run probes nothing."""
    root, _, _ = builds
    (again,) = build(zoo_cfg(root / "hub-plain", tmp_path / "results"))
    assert again["status"] == "skipped" and again["live"]["probes"] == len(STEPS)
    assert_same_results(tmp_path / "results", root / "results")
    (third,) = build(zoo_cfg(root / "hub-plain", tmp_path / "results"))
    assert third["status"] == "skipped" and third["live"]["probes"] == 0


def assert_same_results(a, b):
    sa, sb = stored(a), stored(b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert sa[name]["provenance"]["commit"] == sb[name]["provenance"]["commit"]
        ha, hb = (pd.read_parquet(Path(r) / "zoo" / "zoo-neox" / name / "heads.parquet") for r in (a, b))
        pd.testing.assert_frame_equal(ha, hb, rtol=1e-6)


@pytest.mark.parametrize("bad, says", [
    ("live.enabled=maybe", "error: live.enabled=maybe: must be auto, true or false"),
    ("probe=nosuch", "error: live probing of neox: "),
    ("live.schedule=every:0", "error: live.schedule=every:0: every:K needs an integer K >= 1"),
])
def test_bad_live_config_is_a_one_line_error_before_any_build(tmp_path, bad, says):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")}
    probe = [f"paths.results_dir={tmp_path / 'results'}", *([bad] if bad.startswith("probe=") else [])]
    cmd = [sys.executable, "-m", "harness.zoo", "smoke=true", "progress=false", "suites=[neox]", "live.enabled=true",
           f"live.overrides={json.dumps(probe)}", *([] if bad.startswith("probe=") else [bad])]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(says) and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "hub").exists() and not (tmp_path / "results").exists()
