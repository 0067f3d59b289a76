"""Sweeps at scale, on the embedded suites (smoke build, seconds) through the real `python -m harness -m`:
launchers give identical stores; shards, kills and relaunches end with the unsharded store; concurrent jobs on
one revision leave one correct result; the SLURM and Ray presets compose and render their submissions.

Every run here is CPU-only with a tiny probe batch (data.n=40, T=64). The module builds the three smoke suites
into a scratch hub cache (HF_HUB_CACHE, offline), and the basic launcher's store is the reference.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.cli import launchers
from harness.results import store
from harness.run import devices as gpus
from harness.sources import revisions

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("zoo-neox", "zoo-olmo", "zoo-olmoe")
SMALL = ["experiment=zoo", "data.n=40", "data.seq_len=64", "runner.device=cpu", "runner.progress_bar=false"]
needs_launchers = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None
    or importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="the launchers extra is not installed (pip install -e '.[launchers]')")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The three smoke suites in a scratch hub cache (never the user's ~/.cache/huggingface)."""
    from harness.zoo import build

    cache = tmp_path_factory.mktemp("hub")
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "zoo"), version_base="1.3"):
        cfg = compose("build", overrides=[f"cache_dir={cache}", "smoke=true", "progress=false", "jobs=1"])
    assert [r["status"] for r in build(cfg)] == ["built"] * 3
    return cache


def harness(hub, root, *overrides, env=None, wait=True, die_after=None):
    """`python -m harness <overrides>` on the scratch hub, results under `root` (die_after=n: SIGKILLed in its
    (n+1)-th result write, tests/die_after.py)."""
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true",
           "OMP_NUM_THREADS": "1", **(env or {})}
    flags = [o for o in overrides if o.startswith("-")]  # -m before the overrides (argparse)
    run = ["-m", "harness"] if die_after is None else [str(ROOT / "tests" / "die_after.py"), str(die_after)]
    cmd = [sys.executable, *run, *flags, *SMALL, f"paths.root_dir={root}",
           *(o for o in overrides if o not in flags)]
    if not wait:  # (process, its log file)
        log = Path(root) / f"proc-{time.monotonic_ns()}.log"
        with open(log, "w") as out:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True), log
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    p.stderr = p.stdout  # Hydra logs to stdout: one stream, in order
    return p


def heads_files(root: Path) -> dict[str, Path]:
    base = Path(root) / "results"
    return {str(p.relative_to(base)): p for p in sorted(base.glob("*/*/*/heads.parquet"))}


def assert_same_store(a: Path, b: Path, models=SUITES) -> None:
    fa = {k: v for k, v in heads_files(a).items() if k.split("/")[1] in models}
    fb = {k: v for k, v in heads_files(b).items() if k.split("/")[1] in models}
    assert sorted(fa) == sorted(fb) and len(fa) == 6 * len(models)
    for k in fa:
        pd.testing.assert_frame_equal(pd.read_parquet(fa[k]), pd.read_parquet(fb[k]), check_exact=True, obj=k)
        sa, sb = (json.loads(f[k].with_name("summary.json").read_text()) for f in (fa, fb))
        assert sa["scalars"] == sb["scalars"], k
        assert sa["provenance"]["duplicate_of"] == sb["provenance"]["duplicate_of"], k


@pytest.fixture(scope="module")
def reference(hub, tmp_path_factory):
    """The three suites as one multirun with Hydra's basic launcher (one process, jobs in turn)."""
    root = tmp_path_factory.mktemp("basic")
    p = harness(hub, root, "-m", f"model={','.join(SUITES)}", "logger=none")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("revisions x 1 probes") == 3
    return root


# ---------------------------------------------------------------- launchers

def _intervals(sweep_dir: Path) -> list[tuple[float, float]]:
    """(submitted, finished) per submitit job: its submission file and its result file."""
    jobs = [d for d in (sweep_dir / ".submitit").iterdir() if list(d.glob("*_result.pkl"))]
    return [(next(d.glob("*_submitted.pkl")).stat().st_mtime, next(d.glob("*_result.pkl")).stat().st_mtime)
            for d in jobs]


@needs_launchers
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_give_the_basic_store(hub, reference, tmp_path, launcher):
    """The three suites through joblib (2 worker processes), each grid as 3 shards (9 jobs: sharded ==
    unsharded, one analysis per model), and through submitit_local (3 jobs, at most 2 at once)."""
    shards = ["revisions.shard=range(0,3)/3"] if launcher == "joblib" else []
    p = harness(hub, tmp_path, "-m", f"model={','.join(SUITES)}", *shards, "logger=none", f"hydra/launcher={launcher}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "validated against ConfigStore schema" not in p.stderr  # our presets replace the plugins' configs
    assert_same_store(reference, tmp_path)
    for model in SUITES:  # the job that completed a grid analysed it, as the unsharded job did
        found = (tmp_path / "results" / "zoo" / model / "findings.json").read_text()
        assert json.loads(found) == json.loads((reference / "results" / "zoo" / model / "findings.json").read_text())
    if launcher == "submitit_local":
        spans = sorted(_intervals(next((tmp_path / "logs" / "multiruns").iterdir())))
        assert len(spans) == 3
        running = lambda t: sum(a <= t < b for a, b in spans)
        assert max(running(a) for a, _ in spans) == 2  # two at once, the third after one of them ended
        assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.5


# ---------------------------------------------------------------- shards, kill -9, relaunch

def test_sharded_sweep_killed_and_relaunched_ends_with_the_unsharded_store(hub, reference, tmp_path):
    """zoo-neox as 3 shards; the sweep is SIGKILLed while writing its second revision (tests/die_after.py 1:
    after heads.parquet, before summary.json). The same command again completes the store without touching
    the finished revision, or even looking for its checkpoint. (Basic launcher: one process to kill; the
    joblib test above runs shards in parallel processes.)"""
    cache = tmp_path / "hub"
    shutil.copytree(hub, cache, symlinks=True)
    sweep = ["-m", "model=zoo-neox", "revisions.shard=range(0,3)/3"]
    p = harness(cache, tmp_path, *sweep, "logger=none", die_after=1)
    assert p.returncode == -9
    model_dir = tmp_path / "results" / "zoo" / "zoo-neox"
    done = sorted(d.name for d in model_dir.iterdir() if (d / "summary.json").exists())
    killed = sorted(d.name for d in model_dir.iterdir() if d.is_dir() and not (d / "summary.json").exists()
                    and (d / "heads.parquet").exists())
    assert done and killed  # a parquet without its summary: not a result
    times = {f: f.stat().st_mtime_ns for d in done for f in (model_dir / d).iterdir()}
    # Reuse comes before download: the finished revisions' checkpoints may as well be gone from the cache.
    refs = hub_refs(cache)
    keep = {refs[r] for r in refs if r not in done}
    for r in done:
        if refs[r] not in keep:
            shutil.rmtree(cache / REPO / "snapshots" / refs[r])

    p = harness(cache, tmp_path, *sweep, "logger=wandb", "logger.mode=offline")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("(not downloaded)") == len(done)
    assert times == {f: f.stat().st_mtime_ns for f in times}
    assert_same_store(reference, tmp_path, models=("zoo-neox",))
    ref_findings = json.loads((reference / "results" / "zoo" / "zoo-neox" / "findings.json").read_text())
    assert json.loads((model_dir / "findings.json").read_text()) == ref_findings  # one analysis, the same
    assert p.stdout.count("findings:") >= 1 and p.stdout.count("summary: waiting for") >= 1

    # W&B: one run per job, grouped by experiment, its shard and revisions in the config, a row per revision.
    from wandb_offline import find_runs, read_run

    runs = [read_run(r) for r in find_runs(tmp_path / "wandb_runs")]
    assert len(runs) == 3 and all(r.complete and r.group == "zoo" for r in runs)
    assert sorted(r.config["shard"] for r in runs) == ["0/3", "1/3", "2/3"]
    grid = [r.name for r in revisions.select({"name": "zoo-neox"}, {"select": "all"}, _zoo_revisions(cache))]
    for r in runs:
        i = int(r.config["shard"][0])
        assert r.config["revision"] == grid[i::3] and r.config["model"]["name"] == "zoo-neox"
        assert r.name == f"zoo-neox-shard{i}of3"
        rows = [h for h in r.history if "selectivity.bos_fraction" in h]
        assert len(rows) == 2 and all("tokens" in h for h in rows)


REPO = "models--circuit-trajectories--zoo-neox"


def hub_refs(cache: Path) -> dict[str, str]:
    return {p.name: p.read_text().strip() for p in (cache / REPO / "refs").iterdir()}


def _zoo_revisions(cache: Path) -> list[revisions.Revision]:
    cfg = OmegaConf.load(ROOT / "conf" / "model" / "zoo-neox.yaml")
    return sorted((revisions.make_revision(cfg, n) for n in hub_refs(cache)),
                  key=lambda r: (r.step is None, r.step or 0, r.name))


# ---------------------------------------------------------------- concurrent writers

def _lock_waiters(lock: Path) -> int:
    """Processes blocked on `lock` (Linux /proc/locks marks waiters with '->')."""
    ino = f":{lock.stat().st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and ino in line)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to see the waiters")
def test_two_processes_on_one_revision_leave_one_correct_result(hub, reference, tmp_path):
    """Both jobs get to the revision's lock (the test holds it until both wait there): one probes and
    writes, the other finds the result once it has the lock and reuses it."""
    folder = tmp_path / "results" / "zoo" / "zoo-olmoe" / "step8"
    args = ("model=zoo-olmoe", "revisions.only=step8", "logger=none")
    with store.locked(folder):
        procs = [harness(hub, tmp_path, *args, wait=False) for _ in range(2)]
        deadline = time.monotonic() + 300
        while _lock_waiters(folder / ".lock") < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p, _ in procs)
            time.sleep(0.2)
    assert [p.wait(timeout=300) for p, _ in procs] == [0, 0]
    logs = "".join(log.read_text() for _, log in procs)
    assert logs.count("zoo-olmoe step8: reusing") == 1
    ref = reference / "results" / "zoo" / "zoo-olmoe" / "step8"
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "heads.parquet"), pd.read_parquet(ref / "heads.parquet"))
    assert store.summary(folder)["scalars"] == store.summary(ref)["scalars"]


def test_a_crash_between_the_two_files_leaves_no_result(tmp_path):
    """The store's pair: the old summary goes first, so a crash after the new parquet leaves no complete
    (old summary + new parquet) result; a parquet that is not the one its summary names does not count."""
    folder = tmp_path / "r"
    old = pd.DataFrame({"layer": [0], "head": [0], "x.y": [1.0]})
    store.write(folder, old, {"scalars": {"x.s": 1.0}, "provenance": {"repo": "a/b", "probe_hash": "p", "commit": "c"}})
    assert store.reusable(folder, "a/b", None, "p", commit="c") and not store.reusable(folder, "a/b", None, "q", "c")
    code = ("import die_after; die_after.arm(0); "
            "import pandas as pd; from pathlib import Path; from harness.results import store; "
            f"store.write(Path({str(folder)!r}), pd.DataFrame({{'layer': [0], 'head': [0], 'x.y': [2.0]}}), "
            "{'scalars': {}, 'provenance': {'repo': 'a/b', 'probe_hash': 'p', 'commit': 'c'}})")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests",
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -9  # SIGKILL between heads.parquet and summary.json
    assert pd.read_parquet(folder / "heads.parquet")["x.y"].tolist() == [2.0]
    assert store.summary(folder) is None and not store.reusable(folder, "a/b", None, "p", commit="c")
    store.write(folder, old, {"scalars": {}, "provenance": {"repo": "a/b", "probe_hash": "p", "commit": "c"}})
    pd.DataFrame({"layer": [0], "head": [0], "x.y": [3.0]}).to_parquet(folder / "heads.parquet")
    assert store.summary(folder) is None  # not the parquet the summary names


# ---------------------------------------------------------------- grids, launchers, GPUs: fast checks

def test_shard_and_only_select_the_jobs_part_of_the_grid():
    cfg = OmegaConf.create({"name": "zoo-neox"})
    grid = [revisions.Revision(f"step{s}", s, s) for s in (0, 1, 2, 4, 8)]
    part = lambda **g: [r.name for r in revisions.job_part(cfg, {"select": "all", **g}, grid)]
    shards = [part(shard=f"{i}/3") for i in range(3)]
    assert shards == [["step0", "step4"], ["step1", "step8"], ["step2"]]
    assert sorted(sum(shards, [])) == sorted(r.name for r in grid)
    assert part(only="step4") == ["step4"] and part(shard="0/1") == [r.name for r in grid]
    with pytest.raises(revisions.RevisionError, match=r"zoo-neox has no revision 'step3' \(nearest: step2, step4"):
        part(only="step3")
    with pytest.raises(revisions.RevisionError, match=r"revisions.shard=5/6 is outside the grid: .* 5 revision"):
        part(shard="5/6")
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(revisions.RevisionError, match="is not a shard") as e:
            part(shard=bad)
        assert "\n" not in str(e.value)
    assert launchers.expand_shards(["x=1", "revisions.shard=range(0,3)/3"]) == ["x=1", "revisions.shard=0/3,1/3,2/3"]


def test_missing_launcher_plugin_is_one_line(monkeypatch):
    missing = ("hydra_plugins.not_installed", "launchers", "hydra-joblib-launcher")
    monkeypatch.setitem(launchers.PLUGINS, "joblib", missing)
    msg = launchers.missing_plugin(["-m", "model=zoo-neox", "hydra/launcher=joblib"])
    assert msg == ("hydra/launcher=joblib needs the launchers extra: pip install -e '.[launchers]' "
                   "(or pip install hydra-joblib-launcher)")
    assert launchers.missing_plugin(["hydra/launcher=joblib", "--cfg", "hydra"]) is None  # only shows the config
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:  # the real entry point, ~1 s
        p = subprocess.run([sys.executable, "-m", "harness", "-m", "hydra/launcher=ray"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.strip() == (
            "error: hydra/launcher=ray needs the ray extra: pip install -e '.[ray]' (or pip install hydra-ray-launcher)")


def _hydra(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@needs_launchers
def test_slurm_preset_renders_a_job_array_with_one_gpu_per_task(tmp_path, monkeypatch):
    """The submitit_slurm preset through submitit's own sbatch rendering, as the plugin's launch() builds it.
    (submitit's SLURM executor only checks that an `srun` is on PATH: a placeholder stands in; nothing runs.)"""
    import submitit
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = _hydra("hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "model=pythia-1b",
                 f"hydra.sweep.dir={tmp_path}", "hydra.job.name=harness")
    launcher = instantiate(cfg.hydra.launcher)
    params = dict(launcher.params)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    slurm = executor._executor
    script = _make_sbatch_string(command="python -m submitit.core._submit", folder=slurm.folder, map_count=20,
                                 **slurm.parameters)
    for line in ("--gres=gpu:1", "--array=0-19%16", "--time=240", "--signal=USR2@120", "--requeue",
                 "--partition=gpu", "--cpus-per-task=8", "--mem=64GB", "--job-name=harness"):
        assert f"#SBATCH {line}" in script.splitlines(), (line, script)
    assert slurm.max_num_timeout == 3 and str(slurm.folder).startswith(str(tmp_path / ".submitit"))
    assert _hydra("hydra/launcher=submitit_local").hydra.launcher.array_parallelism == 2


def test_ray_preset_composes_local_and_cluster():
    local = _hydra("hydra/launcher=ray").hydra.launcher
    assert local._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert local.ray.init.address is None
    remote = OmegaConf.to_container(local.ray.remote)
    assert remote == {"num_cpus": 1, "num_gpus": 0, "max_calls": 1}
    cluster = _hydra("hydra/launcher=ray", "hydra.launcher.ray.init.address=auto",
                     "hydra.launcher.ray.remote.num_gpus=1")
    assert cluster.hydra.launcher.ray.init.address == "auto" and cluster.hydra.launcher.ray.remote.num_gpus == 1
    if importlib.util.find_spec("ray") is not None:  # ray validates the per-job options without starting
        import ray

        ray.remote(**remote)(lambda: None)


def test_ray_runs_the_zoo_multirun_on_a_local_instance(hub, reference, tmp_path):
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("the ray extra is not installed (pip install -e '.[ray]'; kept apart: ray pins cloudpickle<3)")
    p = harness(hub, tmp_path, "-m", f"model={','.join(SUITES)}", "logger=none", "hydra/launcher=ray",
                "hydra.launcher.ray.init.num_cpus=2", "hydra.launcher.ray.init.include_dashboard=false")
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_store(reference, tmp_path)


def test_one_gpu_per_job_process(tmp_path, monkeypatch):
    """Jobs of one sweep on a 2-GPU machine: distinct devices while free, then a shared one (never a wait)."""
    monkeypatch.setattr(gpus, "_held", [])
    got = []
    for job in range(3):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what every worker process inherits
        got.append(gpus.claim(tmp_path, job_num=job))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == got[-1]
    assert got == ["3", "5", "3"]  # job 2 finds both held: device job_num mod 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpus.claim(tmp_path) is None
    for fh in gpus._held:
        fh.close()
