"""Revisions offline: discovery, grids (harness.sources.revisions); resolution through a real local hub cache, prefetch,
release (harness.sources.checkpoints).

How the hub is redirected to a temporary cache: huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
once, at import, into `huggingface_hub.constants`; transformers and snapshot_download look those module
attributes up at call time. So the `hub` fixture sets both the environment variables (read at call time by
harness.sources.revisions and by subprocesses) and the `constants` attributes (read by the already imported hub
client and transformers), and harness.sources.revisions also passes `cache_dir=` explicitly to snapshot_download.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import tiny_model
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from harness.cli.ls import human
from harness.sources import checkpoints as C
from harness.sources import hubcache
from harness.sources import revisions as R

ROOT = Path(__file__).resolve().parent.parent
PAPER = {  # docs/method.md section 1
    "pythia-1b": "step1 step4 step16 step64 step256 step512 step3000 step10000 step38000 step143000",
    "olmo-1b-0724": "step1000-tokens2B step2000-tokens4B step5000-tokens10B step11000-tokens23B step25000-tokens52B "
                    "step56000-tokens117B step126000-tokens264B step285000-tokens597B step644000-tokens1350B "
                    "step1454000-tokens3048B",
    "olmoe-1b-7b-0924": "step5000-tokens20B step10000-tokens41B step25000-tokens104B step50000-tokens209B "
                        "step100000-tokens419B step200000-tokens838B step400000-tokens1677B step600000-tokens2516B "
                        "step800000-tokens3355B step1220000-tokens5117B",
}
# Cached revisions per suite: (name, seed); equal seeds = identical weights (Pythia step0 == step1).
SUITES = {
    "pythia-1b": ("gpt_neox", [("step0", 0), ("step1", 0), ("step2", 2), ("step4", 4), ("step16", 16),
                               ("step512", 512), ("step1000", 1000), ("step143000", 143000)]),
    "olmo-1b-0724": ("olmo", [("step1000-tokens2B", 1), ("step2000-tokens4B", 2), ("step5000-tokens10B", 5)]),
    "olmoe-1b-7b-0924": ("olmoe", [("step5000-tokens20B", 1), ("step10000-tokens41B", 2), ("main", 3)]),
}


def model_cfg(name: str, **changes):
    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    for k, v in changes.items():
        cfg[k] = v
    return cfg


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Saved tiny checkpoints, one folder per (arch, seed, name); a train_state.json makes each commit unique."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for suite, (arch, revs) in SUITES.items():
        models = {}
        for name, seed in revs:
            if seed not in models:
                models[seed] = tiny_model(arch, seed=seed, layers=1, heads=2, d_model=16)
            d = root / suite / name
            models[seed].save_pretrained(d)
            (d / "train_state.json").write_text(json.dumps({"revision": name}))
            out[suite, name] = d
    return out


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty offline hub cache in tmp, seen by harness.sources.revisions, huggingface_hub and transformers."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(R, "_warned", set())  # the "names from the cache" warning is once per process
    return cache


@pytest.fixture
def suites(hub, checkpoints):
    """The hub cache holding every suite under its real repo id and revision names; returns commits."""
    return {(s, n): hubcache.publish(d, model_cfg(s).repo, n, cache_dir=hub) for (s, n), d in checkpoints.items()}


def cached_only(name):  # the suite's config without its known schedule: revisions = what the cache holds
    return model_cfg(name, schedule=None)


# ---------------------------------------------------------------- names, schedules, tokens

def test_schedules_match_method():
    pythia = R.schedule_names(model_cfg("pythia-1b"))
    assert len(pythia) == 154 and pythia[:3] == ["step0", "step1", "step2"] and pythia[-1] == "step143000"
    olmo = R.schedule_names(model_cfg("olmo-1b-0724"))
    assert len(olmo) == 1454 and olmo[-1] == "step1454000-tokens3048B"
    olmoe = R.schedule_names(model_cfg("olmoe-1b-7b-0924"))
    assert {"step1200000-tokens5033B", "step1220000-tokens5117B"} <= set(olmoe)
    for model, names in PAPER.items():
        assert model_cfg(model).paper_revisions == names.split()
        assert set(names.split()) <= set(R.schedule_names(model_cfg(model)))


def test_steps_and_tokens():
    cfg = model_cfg("olmo-1b-0724")
    assert R.make_revision(cfg, "step1000-tokens2B") == R.Revision("step1000-tokens2B", 1000, 1000 * 2097152)
    assert R.make_revision(cfg, "main").step == 1454000
    assert R.make_revision(model_cfg("olmoe-1b-7b-0924"), "main") == R.Revision("main", None, None)
    assert [R.parse_step(n)[0] for n in ("step7", "7", "checkpoint-7", "step7-tokens1B", "final")] == [7] * 4 + [None]
    local = model_cfg("local", repo="/nowhere")
    assert R.make_revision(local, "step10-tokens3B").tokens == 3 * 10**9  # no tokens_per_step: trust the name
    assert human(2097152) == "2.1M" and human(3000 * 2097152) == "6.3B" and human(0) == "0"


# ---------------------------------------------------------------- discovery and grids

def test_offline_discovery_merges_cache_and_schedule(suites, caplog):
    with caplog.at_level(logging.WARNING, "harness.sources.revisions"):
        revs = R.available(model_cfg("pythia-1b"))
        R.available(model_cfg("pythia-1b"))
    assert len(revs) == 154 and [r.step for r in revs] == sorted(r.step for r in revs)
    assert [r.name for r in revs if r.name == "main"] == []  # main == step143000: no alias in grids
    warnings = [m for m in caplog.messages if "hub offline" in m]
    assert len(warnings) == 1 and "local cache (8)" in warnings[0]
    olmoe = R.available(cached_only("olmoe-1b-7b-0924"))
    assert [(r.name, r.step) for r in olmoe][-1] == ("main", None)  # the annealed main sorts last, no step


def test_saved_ref_list_is_used_offline(hub, monkeypatch):
    """Online, list_repo_refs' answer is saved in the cache; offline runs then use it, not the schedule."""
    from types import SimpleNamespace

    from huggingface_hub import constants

    fake = SimpleNamespace(branches=[SimpleNamespace(name=n, target_commit=f"{i:040x}")
                                     for i, n in enumerate(["main", "step0", "step3000", "step143000"])], tags=[])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.list_repo_refs", lambda repo: fake)
    online = [r.name for r in R.available(model_cfg("pythia-1b"))]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert [r.name for r in R.available(model_cfg("pythia-1b"))] == online == ["step0", "step3000", "step143000"]


def test_grids(suites):
    cfg = cached_only("pythia-1b")
    revs = R.available(cfg)
    names = lambda grid: [r.name for r in R.select(cfg, OmegaConf.create(grid), revs)]
    assert names({"select": "all"}) == [n for n, _ in SUITES["pythia-1b"][1]]
    assert names({"select": "final"}) == ["step143000"]
    assert names({"select": "list", "names": ["step16", "step1"]}) == ["step1", "step16"]
    assert names({"select": "all", "min_step": 2, "max_step": 1000}) == ["step2", "step4", "step16", "step512",
                                                                          "step1000"]
    log4 = R.select(cfg, OmegaConf.create({"select": "log", "n": 4}), revs)
    assert log4[0].name == "step0" and log4[-1].name == "step143000" and len({r.name for r in log4}) == 4
    gaps = [math.log(b.step + 1) - math.log(a.step + 1) for a, b in itertools.pairwise(log4)]
    assert max(gaps) < 2 * min(gaps)  # roughly even in log(step+1)
    full = R.available(model_cfg("pythia-1b"))  # with the schedule: the paper grid and a 10-point log grid
    assert [r.name for r in R.select(model_cfg("pythia-1b"), {"select": "paper"}, full)] == PAPER["pythia-1b"].split()
    log10 = R.select(model_cfg("pythia-1b"), {"select": "log", "n": 10}, full)
    assert len(log10) == 10 and (log10[0].name, log10[-1].name) == ("step0", "step143000")
    no_grid = model_cfg("pythia-1b", paper_revisions=None)  # a model the study did not run: its 10-point design
    assert R.select(no_grid, {"select": "paper"}, full) == log10
    olmoe = cached_only("olmoe-1b-7b-0924")
    assert [r.name for r in R.select(olmoe, {"select": "final"}, R.available(olmoe))] == ["step10000-tokens41B"]


def test_unknown_names_give_one_line_errors(suites):
    cfg = model_cfg("pythia-1b")
    with pytest.raises(R.RevisionError, match=r"pythia-1b has no revision 'step1500' \(nearest: step1000, "
                                              r"step2000, step15000\)"):
        R.select(cfg, {"select": "list", "names": ["step1500"]}, R.available(cfg))
    with pytest.raises(R.RevisionError) as e:  # on the schedule but not cached, hub offline
        C.resolve(cfg, R.make_revision(cfg, "step3000"))
    assert "\n" not in str(e.value) and "not in the hub cache" in str(e.value) and "step1000" in str(e.value)
    with pytest.raises(R.RevisionError, match="revisions=list needs names"):
        R.select(cfg, {"select": "list"}, R.available(cfg))
    with pytest.raises(R.RevisionError, match="nothing is cached"):
        R.available(model_cfg("pythia-1b", repo="nobody/nothing", schedule=None))


# ---------------------------------------------------------------- resolution and loading

@pytest.mark.parametrize("suite", list(SUITES))
def test_resolve_and_load_offline(suites, checkpoints, suite):
    cfg = cached_only(suite)
    arch = SUITES[suite][0]
    for rev in R.available(cfg):
        res = C.resolve(cfg, rev)
        ref = (R.repo_folder(cfg.repo, R.hub_cache()) / "refs" / rev.name).read_text()
        assert res.commit == ref == suites[suite, rev.name] and res.path.name == ref
        assert (res.source, res.hub_revision, res.revision) == (cfg.repo, rev.name, rev)
        # the blob name is the file's sha256, so the hash equals that of the original folder
        assert res.weights_hash == C.weights_hash(checkpoints[suite, rev.name]) and len(res.weights_hash) == 64
    model = AutoModelForCausalLM.from_pretrained(res.source, revision=res.hub_revision)
    assert model.config.model_type == arch
    if suite == "olmo-1b-0724":
        assert [r.tokens for r in R.available(cfg)] == [s * 2097152 for s in (1000, 2000, 5000)]


def test_duplicates_detected(suites, caplog):
    cfg = cached_only("pythia-1b")
    res = [C.resolve(cfg, r) for r in R.available(cfg)[:3]]
    assert res[0].commit != res[1].commit and res[0].weights_hash == res[1].weights_hash
    with caplog.at_level(logging.WARNING, "harness.sources.revisions"):
        marked = list(C.flag_same_weights(res))
    assert [r.duplicate_of for r in marked] == [None, "step0", None]
    assert any("step1 has the same weights as step0" in m for m in caplog.messages)


def test_prefetcher_downloads_next_in_background(suites):
    cfg = cached_only("pythia-1b")
    revs = R.available(cfg)[:4]
    started = {r.name: threading.Event() for r in revs}
    threads = {}

    def resolver(rev):
        threads[rev.name] = threading.current_thread().name
        started[rev.name].set()
        return C.resolve(cfg, rev)

    p = C.Prefetcher(cfg, revs, resolver=resolver)
    out = []
    for i, res in enumerate(p):
        if i + 1 < len(revs):  # while revision i is "probed", i+1 is already being resolved
            assert p.pending == revs[i + 1].name and started[revs[i + 1].name].wait(10)
        out.append(res)
    assert [r.name for r in out] == [r.name for r in revs]
    assert all(t.startswith("prefetch") for t in threads.values())
    assert [r.duplicate_of for r in out] == [None, "step0", None, None]


def test_release_deletes_only_unshared_blobs(suites):
    cfg = cached_only("pythia-1b")
    step0, step1, step2 = (C.resolve(cfg, r) for r in R.available(cfg)[:3])
    blobs = step0.path.parent.parent / "blobs"
    weights = (step0.path / "model.safetensors").resolve()
    own = (step0.path / "train_state.json").resolve()  # unique to step0
    shared_config = (step0.path / "config.json").resolve()
    assert C.release(step0) > 0
    assert not step0.path.exists() and not own.exists()
    assert weights.exists() and shared_config.exists()  # still used by step1 (and step2's config)
    assert C.release(step1) > 0 and not weights.exists()
    assert (step2.path / "model.safetensors").is_file() and blobs.is_dir()
    with pytest.raises(R.RevisionError):  # the name is still known, its files are gone
        C.resolve(cfg, step0.revision)
    last = C.resolve(cfg, R.available(cfg)[-1])  # an alias (main == step143000) shares the snapshot: kept
    hubcache.publish(last.path, cfg.repo, "main")
    assert C.release(last) == 0 and last.path.is_dir()


# ---------------------------------------------------------------- local folders

def test_local_folder_model(tmp_path, checkpoints):
    import shutil

    for name, src in (("step0", "step0"), ("checkpoint-1000", "step1000"), ("step2000-tokens4B", "step4"),
                      ("final", "step16")):
        shutil.copytree(checkpoints["pythia-1b", src], tmp_path / name)
    (tmp_path / "notes").mkdir()  # no checkpoint: not a revision
    cfg = model_cfg("local", repo=str(tmp_path), tokens_per_step=10)
    revs = R.available(cfg)
    assert [(r.name, r.step, r.tokens) for r in revs] == [
        ("step0", 0, 0), ("checkpoint-1000", 1000, 10000), ("step2000-tokens4B", 2000, 20000), ("final", None, None)]
    res = C.resolve(cfg, revs[1])
    assert res.hub_revision is None and res.path == (tmp_path / "checkpoint-1000").resolve()
    assert res.commit == C.checkpoint_id(cfg, revs[1]) == C.files_fingerprint(res.path)  # known before resolving
    assert res.weights_hash == C.weights_hash(checkpoints["pythia-1b", "step1000"])
    assert AutoModelForCausalLM.from_pretrained(res.source, revision=res.hub_revision).config.model_type == "gpt_neox"
    assert C.release(res) == 0 and res.path.is_dir()  # never deletes a user's folder
    assert [r.name for r in R.select(cfg, {"select": "final"}, revs)] == ["step2000-tokens4B"]
    with pytest.raises(R.RevisionError, match="local has no revision 'step1'"):
        R.select(cfg, {"select": "list", "names": ["step1"]}, revs)


# ---------------------------------------------------------------- python -m harness ls

def ls(*args, cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "harness", "ls", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("model", list(PAPER))
def test_ls_paper_revisions_with_empty_cache(tmp_path, model):
    p = ls("revisions", f"model={model}", "revisions=paper", cache=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines()[2:]]
    tps = model_cfg(model).tokens_per_step
    assert [r[1] for r in rows] == PAPER[model].split()  # columns: order, name, stage, step, tokens
    assert [(int(r[3]), r[4]) for r in rows] == [(R.parse_step(r[1])[0], human(R.parse_step(r[1])[0] * tps))
                                                  for r in rows]
    assert "known schedule" in p.stderr and p.stderr.count("\n") == 1  # a single warning line


def test_ls_errors_and_lists(tmp_path):
    p = ls("revisions", "model=pythia-1b", "revisions=list", "revisions.names=[step1500]", cache=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: pythia-1b has no revision")
    p = ls("revisions", "model=nope", cache=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "pythia-1b" in p.stderr
    p = ls("models", cache=tmp_path)
    assert p.returncode == 0 and "EleutherAI/pythia-1b" in p.stdout and "16x8x256" in p.stdout
    p = ls("probes", cache=tmp_path)
    assert p.returncode == 0, p.stderr
