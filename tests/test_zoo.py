"""The zoo mechanism end to end, on a reduced build (seconds): training, log-spaced checkpoints,
hub-cache publishing, offline loading by revision, recipe-hash skip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.sources import hubcache
from harness.zoo import build, checkpoint_steps
from harness.zoo.tasks import (
    BOS,
    RECALL,
    STORE,
    TRIGGERS,
    backcopy_seqs,
    bigram_chain,
    insert_recall,
    mode_seqs,
    repeat_seqs,
    with_bos,
)

ROOT = Path(__file__).resolve().parents[1]
SUITES = {"neox": "gpt_neox", "olmo": "olmo", "olmoe": "olmoe"}


def zoo_cfg(cache, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "zoo"), version_base="1.3"):
        return compose("build", overrides=[f"cache_dir={cache}", "smoke=true", "progress=false", *overrides])


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    results = build(zoo_cfg(cache))
    assert [r["status"] for r in results] == ["built"] * 3
    return cache


def test_checkpoint_schedule_is_log_spaced_then_regular():
    assert checkpoint_steps(1000, 250) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 250, 256, 500, 512, 750, 1000]
    assert checkpoint_steps(8, 4) == [0, 1, 2, 4, 8]


@pytest.mark.parametrize("suite", SUITES)
def test_revisions_published(smoke_cache, suite):
    root = hubcache.repo_folder(f"circuit-trajectories/zoo-{suite}", smoke_cache)
    refs = {p.name for p in (root / "refs").iterdir()}
    assert refs == {"step0", "step1", "step2", "step4", "step8", "main"}
    assert (root / "refs" / "main").read_text() == (root / "refs" / "step8").read_text()
    commit = (root / "refs" / "step4").read_text()
    assert len(commit) == 40 and "\n" not in commit
    snap = root / "snapshots" / commit
    for f in ("config.json", "model.safetensors", "zoo_recipe.json"):
        assert (snap / f).is_symlink() and not os.path.isabs(os.readlink(snap / f))
    meta = json.loads((snap / "zoo_recipe.json").read_text())
    assert meta["step"] == 4 and meta["tokens"] == 4 * meta["recipe"]["batch"] * meta["recipe"]["seq_len"]


LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM
repo = "circuit-trajectories/zoo-" + sys.argv[1]
m4 = AutoModelForCausalLM.from_pretrained(repo, revision="step4")
p0 = AutoModelForCausalLM.from_pretrained(repo, revision="step0").state_dict()
p8 = AutoModelForCausalLM.from_pretrained(repo, revision="main").state_dict()
assert p0.keys() == p8.keys()
try:
    AutoModelForCausalLM.from_pretrained(repo, revision="step3")
    missing = "loaded"
except OSError:
    missing = "OSError"
print(m4.config.model_type, any(not torch.equal(p0[k], p8[k]) for k in p0), missing)
"""


@pytest.mark.parametrize("suite", SUITES)
def test_offline_load_by_revision(smoke_cache, suite):
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE when it is imported.
    env = {**os.environ, "HF_HUB_CACHE": str(smoke_cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", LOAD, suite], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [SUITES[suite], "True", "OSError"]


def test_same_recipe_is_skipped_changed_recipe_rebuilds(smoke_cache):
    again = build(zoo_cfg(smoke_cache))
    assert [r["status"] for r in again] == ["skipped"] * 3
    changed = build(zoo_cfg(smoke_cache, "suites=[olmo]", "smoke_recipe.steps=4"))
    assert [r["status"] for r in changed] == ["built"]


def test_build_is_deterministic(tmp_path):
    a, b = (build(zoo_cfg(tmp_path / d, "suites=[neox]", "smoke_recipe.steps=2"))[0] for d in "ab")
    assert a["commit"] == b["commit"]


def test_parallel_jobs_build_the_same_suites(tmp_path):
    """jobs=2 (spawned worker processes) publishes the same commits as one process."""
    args = ("suites=[neox,olmo]", "smoke_recipe.steps=2")
    one = build(zoo_cfg(tmp_path / "one", *args, "jobs=1"))
    two = build(zoo_cfg(tmp_path / "two", *args, "jobs=2"))
    assert [r["suite"] for r in two] == ["neox", "olmo"]
    assert [r["commit"] for r in one] == [r["commit"] for r in two]


def test_killed_build_resumes_and_publishes_the_same_revisions(tmp_path):
    """SIGKILL mid-build, then the same command: it resumes from the last checkpoint's state (not step 0) and
    publishes exactly the commits of an uninterrupted build."""
    import signal
    import time

    args = ["suites=[neox]", "smoke=true", "progress=false", "smoke_recipe.steps=1000", "smoke_recipe.ckpt_every=50"]
    from harness.zoo.train import STATE_FILE

    repo = "circuit-trajectories/zoo-neox"
    refs = hubcache.repo_folder(repo, tmp_path / "killed") / "refs"
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "killed")}
    cmd = [sys.executable, "-m", "harness.zoo", *args]
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (refs / "step300").is_file() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert not (refs / "main").is_file(), "the build finished before it could be killed"
    published = sorted(p.name for p in refs.iterdir())
    time.sleep(3)  # a surviving worker process would go on publishing (a revision every ~1-2 s here)
    assert sorted(p.name for p in refs.iterdir()) == published, "the build's worker outlived it"
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    resumed = int(out.stdout.split("resumed from step ")[1].split(")")[0])
    assert 200 <= resumed < 1000
    straight = build(zoo_cfg(tmp_path / "straight", *args[:1], *args[3:]))[0]
    assert straight["resumed_from"] is None
    commits = {d: {p.name: p.read_text() for p in (hubcache.repo_folder(repo, tmp_path / d) / "refs").iterdir()}
               for d in ("killed", "straight")}
    assert commits["killed"] == commits["straight"]
    assert not (refs.parent / STATE_FILE).exists()


def test_partial_build_stops_at_until_and_the_full_build_carries_on(tmp_path):
    """until=N publishes the revisions up to step N (the full build's commits), no main; the same build
    without until resumes there and ends with exactly the commits of a straight build."""
    args = ("suites=[neox]", "smoke_recipe.steps=40", "smoke_recipe.ckpt_every=10")
    repo = "circuit-trajectories/zoo-neox"
    refs = lambda d: {p.name: p.read_text() for p in (hubcache.repo_folder(repo, tmp_path / d) / "refs").iterdir()}
    (part,) = build(zoo_cfg(tmp_path / "split", *args, "until=20"))
    assert part["status"] == "partial" and part["until"] == 20
    assert set(refs("split")) == {"step0", "step1", "step2", "step4", "step8", "step10", "step16", "step20"}
    assert build(zoo_cfg(tmp_path / "split", *args, "until=10"))[0]["status"] == "skipped"  # already past it
    (rest,) = build(zoo_cfg(tmp_path / "split", *args))
    assert rest["status"] == "built" and rest["resumed_from"] == 20
    build(zoo_cfg(tmp_path / "straight", *args))
    assert refs("split") == refs("straight") and "main" in refs("split")


def test_bad_suite_or_until_is_a_one_line_error(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path)}
    for bad, says in (("suites=[gpt2]", "unknown zoo suite 'gpt2' (valid: neox, olmo, olmoe)"),
                      ("until=7", "until=7 is not a checkpoint step of this recipe (nearest: 4 and 8;"),
                      ("isa=avx512", "unknown isa 'avx512' (valid: avx2, native)")):
        cmd = [sys.executable, "-m", "harness.zoo", "smoke=true", "progress=false", bad]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(f"error: {says}"), out.stderr
    assert not any(tmp_path.iterdir()), "a rejected build wrote to the cache"


def test_builds_compute_with_the_pinned_instruction_set(smoke_cache):
    """The worker runs torch's AVX2 kernels whatever the caller's process uses (so a suite is the same on
    AVX-512 machines), and each revision records what its bits depend on."""
    import platform

    import torch

    meta = json.loads((hubcache.resolve("circuit-trajectories/zoo-olmo", "step4", smoke_cache) / "zoo_recipe.json")
                      .read_text())
    assert meta["recipe"]["compute"] == {"threads": 1, "isa": "avx2"}
    assert meta["built_with"]["torch"] == torch.__version__ and meta["built_with"]["threads"] == 1
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the instruction set is pinned on x86-64 only")
    assert meta["built_with"]["cpu_capability"] == "AVX2"
    assert "ATEN_CPU_CAPABILITY" not in os.environ  # set for the workers only


def test_frozen_layers_are_not_updated_in_their_phase(tmp_path):
    """A phase's `frozen` layers keep their weights (no step, no weight decay); the next phase trains them."""
    from safetensors.torch import load_file

    phases = ("~suite.olmo.phases", "+suite.olmo.phases.induction={start: 0.0, lr: 1e-3, backcopy: 0.0, frozen: [1]}",
              "+suite.olmo.phases.grow={start: 0.5, lr: 1e-3, backcopy: 0.0}")
    build(zoo_cfg(tmp_path, "suites=[olmo]", *phases))  # smoke: 8 steps, checkpoints 0, 4, 8
    repo = "circuit-trajectories/zoo-olmo"
    w = {s: load_file(hubcache.resolve(repo, f"step{s}", tmp_path) / "model.safetensors") for s in (0, 4, 8)}
    for layer, frozen_until in ((0, 0), (1, 4)):
        names = [k for k in w[0] if k.startswith(f"model.layers.{layer}.")]
        assert names
        for a, b in ((0, 4), (4, 8)):
            moved = max((w[a][k] - w[b][k]).abs().max().item() for k in names)
            assert (moved == 0.0) == (b <= frozen_until), (layer, a, b, moved)


def test_lr_schedule_warms_up_then_decays_within_each_phase():
    from harness.zoo.train import lr_at

    phases = {"a": {"start": 0.0, "lr": 1.0}, "b": {"start": 0.5, "lr": 2.0}}
    r = dict(steps=100, warmup=10, decay=0.1, phases=phases)
    assert lr_at(r, 0) == pytest.approx(0.1) and lr_at(r, 9) > 0.9
    assert lr_at(r, 49) == pytest.approx(0.1) and lr_at(r, 50) == pytest.approx(2.0)
    assert lr_at(r, 99) == pytest.approx(0.2)
    assert lr_at({**r, "decay": 1.0}, 99) == 2.0


def test_cli_builds_and_skips(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "harness.zoo", "suites=[neox]", "smoke=true", "progress=false"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "zoo-neox: built" in out.stdout and (tmp_path / "models--circuit-trajectories--zoo-neox").is_dir()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert "zoo-neox: skipped" in out.stdout


def test_cache_dir_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hubcache.cache_dir() == tmp_path / "hub"
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "zoo"), version_base="1.3"):
        assert compose("build").cache_dir == str(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "x"))
    assert hubcache.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    from huggingface_hub import constants  # neither set: the hub client's own default (read at its import)

    assert hubcache.cache_dir() == Path(constants.HF_HUB_CACHE)


def test_publish_is_content_addressed(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.txt").write_text("hello")
    c1 = hubcache.publish(src, "org/name", "v1", tmp_path / "hub")
    c2 = hubcache.publish(src, "org/name", "v2", tmp_path / "hub")
    root = hubcache.repo_folder("org/name", tmp_path / "hub")
    assert c1 == c2 and len(list((root / "blobs").iterdir())) == 1
    assert (root / "snapshots" / c1 / "sub" / "b.txt").read_text() == "hello"
    assert hubcache.resolve("org/name", "v2", tmp_path / "hub") == root / "snapshots" / c1


def test_tasks_are_seeded_and_well_formed():
    import numpy as np

    rng = lambda: np.random.default_rng(0)
    r1 = repeat_seqs(rng(), 8, 64, 65, 4, 20, held_out=(10,), gap_max=5)
    assert (r1 == repeat_seqs(rng(), 8, 64, 65, 4, 20, held_out=(10,), gap_max=5)).all()
    assert r1.min() >= 5 and r1.max() < 65
    chain = bigram_chain(1, 65)
    bc = backcopy_seqs(rng(), chain, 16, 200, 65, p_trigger=0.1)
    i, t = np.nonzero(np.isin(bc[:, 1:-1], TRIGGERS))
    assert len(i) > 50 and (bc[i, t + 2] == bc[i, t]).all()  # after a trigger: copy of the token before it
    md = mode_seqs(rng(), 16, 64, 65)
    i, t = np.nonzero(np.isin(md, TRIGGERS))
    assert (np.bincount(i, minlength=16) == 1).all()  # one `trigger m` pair per row
    for row, k in zip(md[i], t):
        assert (row[k + 2:] % 4 == row[k + 1] % 4).all() and row.min() >= 1
    b = with_bos(rng(), bc, 0.5)
    assert 0 < (b[:, 0] == BOS).sum() < 16


def test_recall_rows_answer_the_class_of_the_stored_token():
    import numpy as np

    base = repeat_seqs(np.random.default_rng(1), 400, 128, 65, 2, 63, gap_max=32)
    out = insert_recall(np.random.default_rng(2), base, 65, 0.5, recalls=4)
    touched = (out != base).any(1)
    assert 150 < touched.sum() < 250 and (out[~touched] == base[~touched]).all()
    for row, orig in zip(out[touched], base[touched]):
        (store,) = np.nonzero(row == STORE)[0]  # one STORE per row, followed by the stored token
        recalls = np.nonzero(row == RECALL)[0]
        v = row[store + 1]
        assert 2 <= store and 5 <= v < 65 and 1 <= len(recalls) <= 4 and (recalls > store + 2).all()
        assert (row[recalls + 1] == 5 + (v - 5) % 4).all()  # v's class, written out from the spec
        assert not set(np.nonzero(row != orig)[0]) - {store, store + 1, *recalls, *(recalls + 1)}
    # A STORE near the end leaves room for fewer recalls, never a hang or an overwrite (9 slots, 8 recalls asked).
    late = insert_recall(np.random.default_rng(3), base[:, :16], 65, 1.0, recalls=8)
    for row in late:
        (store,) = np.nonzero(row == STORE)[0]
        recalls = np.nonzero(row == RECALL)[0]
        assert len(recalls) >= 1 and (row[recalls + 1] == 5 + (row[store + 1] - 5) % 4).all()


def test_phase_mix_ramps_in_from_the_phase_start():
    from harness.zoo.train import mix_at

    recipe = {"steps": 1000, "phases": {"a": {"start": 0.0, "lr": 1e-3},
                                        "b": {"start": 0.5, "lr": 1e-3, "recall": 0.4, "ramp": 100}}}
    assert [mix_at(recipe, s, "recall") for s in (0, 499)] == [0.0, 0.0]
    assert abs(mix_at(recipe, 500, "recall") - 0.004) < 1e-12 and abs(mix_at(recipe, 549, "recall") - 0.2) < 1e-12
    assert mix_at(recipe, 599, "recall") == mix_at(recipe, 999, "recall") == 0.4
    recipe["phases"]["b"].pop("ramp")
    assert mix_at(recipe, 500, "recall") == 0.4


def test_seed_variants_are_their_own_repos_and_seed_0_keeps_the_old_one(tmp_path):
    """seed=1 publishes circuit-trajectories/zoo-neox-seed1 (other weights), which `model=zoo-neox model.seed=1`
    names; seed 0 keeps the plain repo and the recipe (hash) it had before seeds had repos of their own."""
    from omegaconf import OmegaConf

    from harness.zoo import recipe_hash

    args = ("suites=[neox]", "smoke_recipe.steps=2")
    zero, one = (build(zoo_cfg(tmp_path, *args, f"seed={s}"))[0] for s in (0, 1))
    assert (zero["repo"], one["repo"]) == ("circuit-trajectories/zoo-neox", "circuit-trajectories/zoo-neox-seed1")
    cfg = zoo_cfg(tmp_path, *args)  # the recipe as it was built before: the suite's yaml + seed, smoke, compute
    old = {**OmegaConf.to_container(cfg.suite.neox, resolve=True), "seed": 0,
           **OmegaConf.to_container(cfg.smoke_recipe, resolve=True), "compute": {"threads": 1, "isa": "avx2"}}
    assert old["repo"] == "circuit-trajectories/zoo-neox" and zero["recipe_hash"] == recipe_hash(old)
    meta = json.loads((hubcache.resolve(one["repo"], "step2", tmp_path) / "zoo_recipe.json").read_text())
    assert meta["recipe"]["seed"] == 1 and meta["recipe"]["repo"] == one["repo"]
    weights = {r["repo"]: (hubcache.resolve(r["repo"], "step0", tmp_path) / "model.safetensors").read_bytes()
               for r in (zero, one)}
    assert weights[zero["repo"]] != weights[one["repo"]]  # another init
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for seed, name in ((0, "zoo-neox"), (1, "zoo-neox-seed1")):
            m = compose("config", overrides=["model=zoo-neox", f"model.seed={seed}"]).model
            assert (m.name, m.repo, m.family, m.seed) == (name, f"circuit-trajectories/{name}", "zoo-neox", seed)
