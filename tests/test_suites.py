"""The public checkpoint suites, offline: a local hub cache holding refs named exactly as each suite names them
(branches and tags), read by `python -m harness ls revisions` with HF_HUB_OFFLINE=1.

Every expected order, step and token count below is written by hand from the suite's naming scheme and the
preset's numbers (tokens per step, per checkpoint, per stage), never computed by the code under test. The cache
holds refs only where names are all that matters; one tiny file per snapshot, so the hub client can resolve them.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.ls import compose, human
from harness.config.schema import ConfigError, check_model, resolved
from harness.sources import hubcache
from harness.sources import revisions as R

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf" / "model"

O2_7B, O2_1B, SMOL3, AMBER, CRFM, FW = 4194304, 2097152, 2359296, 3497583333, 524288, 2097152
O2_7B_END = 928646 * O2_7B  # stage1-step928646-tokens3896B, the end of OLMo-2 7B's stage 1
O3_S1, O3_S2 = 1413814 * 4194304, 47684 * 2097152  # Olmo-3 7B: stage 1 and stage 2 lengths

# preset, overrides, refs in the cache (any order), then the rows `ls revisions revisions=all` prints, in training
# order: (name, stage, step, tokens). `-` is no stage / no step; None tokens print as `?`.
SUITES = {
    "olmo2-7b": ("olmo2-1124-7b", [], [
        ("step150-tokens1B", "-", 150, 150 * O2_7B),  # unprefixed early name: stage 1
        ("stage1-step1000-tokens5B", "1", 1000, 1000 * O2_7B),  # 4.19B, rounded up in the name
        ("stage1-step928646-tokens3896B", "1", 928646, O2_7B_END),
        ("stage2-ingredient1-step1000-tokens5B", "2/ingredient1", 1000, O2_7B_END + 1000 * O2_7B),
        ("stage2-ingredient1-step11931-tokens50B", "2/ingredient1", 11931, O2_7B_END + 11931 * O2_7B),
        ("stage2-ingredient2-step11931-tokens50B", "2/ingredient2", 11931, O2_7B_END + 11931 * O2_7B),
        ("main", "-", "-", None),  # the ingredients' soup: annealed
    ]),
    "olmo2-1b": ("olmo2-0425-1b", [], [
        ("stage1-step1000-tokens3B", "1", 1000, 1000 * O2_1B),
        ("stage1-step140000-tokens294B", "1", 140000, 140000 * O2_1B),
        ("stage2-ingredient3-step6000-tokens13B", "2/ingredient3", 6000, 140000 * O2_1B + 6000 * O2_1B),
        ("stage2-ingredient3-step12000-tokens26B", "2/ingredient3", 12000, 140000 * O2_1B + 12000 * O2_1B),
    ]),
    "olmo3-7b": ("olmo3-1025-7b", [], [
        ("stage1-step0", "1", 0, 0),
        ("stage1-step1000", "1", 1000, 1000 * 4194304),
        ("stage2-step1000", "2", 1000, O3_S1 + 1000 * 2097152),  # stage 2: half the batch
        ("stage2-step47684", "2", 47684, O3_S1 + O3_S2),
        ("stage3-step11921", "3", 11921, O3_S1 + O3_S2 + 11921 * 4194304),
        ("main", "-", "-", None),
    ]),
    "smollm3": ("smollm3-3b", ["model.schedule=null"], [
        ("stage1-step-40000", "1", 40000, 40000 * SMOL3),
        ("stage1-step-3440000", "1", 3440000, 3440000 * SMOL3),
        ("stage2-step-3480000", "2", 3480000, 3480000 * SMOL3),  # the step count runs on: no offset
        ("stage3-step-4720000", "3", 4720000, 4720000 * SMOL3),
        ("lc-4k-to-32k", "-", "-", None),  # another kind of branch: no step
    ]),  # main (no weights) is in the cache too, and left out
    "amber": ("amber", ["model.schedule=null"], [
        ("ckpt_000", "-", 0, 1 * AMBER),  # saved after the first of 360 data chunks
        ("ckpt_001", "-", 1, 2 * AMBER),
        ("ckpt_100", "-", 100, 101 * AMBER),
        ("ckpt_358", "-", 358, 359 * AMBER),
        ("main", "-", 359, 360 * AMBER),  # main == ckpt_359, the end
    ]),
    "crfm": ("crfm-gpt2-small", ["model.seed=49", "model.schedule=null"], [  # checkpoint-N are git tags
        ("checkpoint-10", "-", 10, 10 * CRFM),
        ("checkpoint-100", "-", 100, 100 * CRFM),
        ("checkpoint-2000", "-", 2000, 2000 * CRFM),
        ("checkpoint-400000", "-", 400000, 400000 * CRFM),
    ]),  # main == checkpoint-400000: one name
    "fineweb": ("fineweb-edu-ablation", [], [
        ("step-001000-2BT", "-", 1000, 1000 * FW),
        ("step-010000-21BT", "-", 10000, 10000 * FW),
        ("step-167000-350BT", "-", 167000, 167000 * FW),
        ("main", "-", "-", None),
    ]),
    "smollm2": ("smollm2-135m", [], [
        ("step-240000", "-", 240000, 240000 * 1048576),
        ("step-480000", "-", 480000, 480000 * 1048576),
        ("main", "-", "-", None),
    ]),
    "polypythia": ("polypythia-160m", ["model.seed=3", "model.schedule=null"], [
        ("step0", "-", 0, 0),
        ("step1", "-", 1, 2097152),
        ("step512", "-", 512, 512 * 2097152),
        ("step1000", "-", 1000, 1000 * 2097152),
        ("step143000", "-", 143000, 143000 * 2097152),
    ]),  # main == step143000: one name
}
EXTRA_REFS = {"smollm3": ["main"], "crfm": ["main"], "polypythia": ["main"]}  # refs the listing leaves out
REPOS = {"olmo2-7b": "allenai/OLMo-2-1124-7B", "olmo2-1b": "allenai/OLMo-2-0425-1B",
         "olmo3-7b": "allenai/Olmo-3-1025-7B", "smollm3": "HuggingFaceTB/SmolLM3-3B-checkpoints",
         "amber": "LLM360/Amber", "crfm": "stanford-crfm/battlestar-gpt2-small-x49",
         "fineweb": "HuggingFaceFW/ablation-model-fineweb-edu",
         "smollm2": "HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints", "polypythia": "EleutherAI/pythia-160m-seed3"}

# (suite, grid overrides) -> the revisions picked, by hand: the default grids keep to pretraining (stage 1 and
# unstaged names) and never take an annealed or weightless main.
GRIDS = [
    ("olmo2-7b", ["revisions=paper"], ["step150-tokens1B", "stage1-step1000-tokens5B", "stage1-step928646-tokens3896B"]),
    ("olmo2-7b", ["revisions=log", "revisions.n=2"], ["step150-tokens1B", "stage1-step928646-tokens3896B"]),
    ("olmo2-7b", ["revisions=final"], ["stage1-step928646-tokens3896B"]),
    ("olmo2-7b", ["revisions=list", "revisions.names=[stage2-ingredient2-step11931-tokens50B,main]"],
     ["stage2-ingredient2-step11931-tokens50B", "main"]),  # a list names any revision
    ("olmo3-7b", ["revisions=paper"], ["stage1-step0", "stage1-step1000"]),
    ("smollm3", ["revisions=paper"], ["stage1-step-40000", "stage1-step-3440000"]),
    ("smollm3", ["revisions=final"], ["stage1-step-3440000"]),
    # log(step+1) of 10, 100, 2000, 400000: 2.40, 4.62, 7.60, 12.90; the middle target 7.65 is checkpoint-2000's
    ("crfm", ["revisions=log", "revisions.n=3"], ["checkpoint-10", "checkpoint-2000", "checkpoint-400000"]),
    ("crfm", ["revisions=paper"], ["checkpoint-10", "checkpoint-100", "checkpoint-2000", "checkpoint-400000"]),
    # log(index+1) of 0, 1, 100, 358, 359 (main): 0, 0.69, 4.62, 5.88, 5.89; the middle target 2.94 is ckpt_100's
    ("amber", ["revisions=log", "revisions.n=3"], ["ckpt_000", "ckpt_100", "main"]),
    ("amber", ["revisions=final"], ["main"]),
    ("fineweb", ["revisions=paper"], ["step-001000-2BT", "step-010000-21BT", "step-167000-350BT"]),
    ("polypythia", ["revisions=log", "revisions.n=2"], ["step0", "step143000"]),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One hub cache for every suite: each ref points at a snapshot of one small config.json."""
    root = tmp_path_factory.mktemp("hub")
    src = tmp_path_factory.mktemp("snapshot")
    (src / "config.json").write_text('{"model_type": "llama"}')
    for suite, (_, _, rows) in SUITES.items():
        for name in [r[0] for r in rows] + EXTRA_REFS.get(suite, []):
            hubcache.publish(src, REPOS[suite], name, cache_dir=root)
    return root


def ls(*args, cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "harness", "ls", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def rows_of(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()[2:]]  # a head line, a column header, then the rows


@pytest.mark.parametrize("suite", list(SUITES))
def test_ls_revisions_order_steps_tokens(cache, suite):
    preset, overrides, expected = SUITES[suite]
    p = ls("revisions", f"model={preset}", *overrides, cache=cache)
    assert p.returncode == 0, p.stderr
    assert f"({REPOS[suite]})" in p.stdout.splitlines()[0]
    want = [[str(i), name, stage, str(step), human(tokens)] for i, (name, stage, step, tokens) in enumerate(expected, 1)]
    assert rows_of(p.stdout) == want


@pytest.mark.parametrize("suite", list(SUITES))
def test_exact_tokens(cache, suite, monkeypatch):
    """The same listing in-process: the token counts exactly, not as printed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    preset, overrides, expected = SUITES[suite]
    revs = R.available(compose([f"model={preset}", *overrides]).model)
    assert [(r.name, r.step, r.tokens) for r in revs] == [
        (name, None if step == "-" else step, tokens) for name, _, step, tokens in expected]


@pytest.mark.parametrize("suite,grid,expected", GRIDS)
def test_grids_pick_by_hand(cache, suite, grid, expected):
    preset, overrides, _ = SUITES[suite]
    p = ls("revisions", f"model={preset}", *overrides, *grid, cache=cache)
    assert p.returncode == 0, p.stderr
    assert [r[1] for r in rows_of(p.stdout)] == expected


def test_main_marked_in_listing(cache):
    p = ls("revisions", "model=olmo2-1124-7b", "revisions=log", cache=cache)
    assert "main is annealed, not the end of pretraining" in p.stdout.splitlines()[0]
    p = ls("revisions", "model=smollm3-3b", "model.schedule=null", cache=cache)
    assert "main holds no weights" in p.stdout.splitlines()[0] and "main" not in [r[1] for r in rows_of(p.stdout)]
    p = ls("revisions", "model=smollm3-3b", "revisions=list", "revisions.names=[main]", cache=cache)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: smollm3-3b: its main holds no weights")


def test_stage_start_from_the_last_stage_revision(cache, monkeypatch):
    """Without the preset's stage lengths, stage 2 starts where the last stage-1 revision in the list ends."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cfg = compose(["model=olmo3-1025-7b", "model.stage_tokens=null"]).model
    tokens = {r.name: r.tokens for r in R.available(cfg)}
    assert tokens["stage2-step1000"] == 1000 * 4194304 + 1000 * 2097152  # stage 1 ends at stage1-step1000 here
    # one name alone, without the list: only the preset's stage lengths can place it
    assert R.make_revision(cfg, "stage2-step1000").tokens is None
    assert R.make_revision(compose(["model=olmo3-1025-7b"]).model, "stage2-step1000").tokens == O3_S1 + 1000 * 2097152


def test_tags_resolve_offline_like_branches(cache):
    """The hub cache stores a tag's ref under refs/<name>, as a branch's: the hub client finds it offline."""
    from huggingface_hub import try_to_load_from_cache

    repo = REPOS["crfm"]
    assert (hubcache.repo_folder(repo, cache) / "refs" / "checkpoint-400000").is_file()
    path = try_to_load_from_cache(repo, "config.json", cache_dir=cache, revision="checkpoint-400000")
    assert isinstance(path, str) and Path(path).read_text() == '{"model_type": "llama"}'


def test_saved_tag_list_is_used_offline(tmp_path, monkeypatch):
    """Online, list_repo_refs' tags are saved with its branches (CRFM's checkpoints are tags only)."""
    from types import SimpleNamespace

    from huggingface_hub import constants

    ref = lambda n: SimpleNamespace(name=n, target_commit="0" * 40)
    fake = SimpleNamespace(branches=[ref("main")], tags=[ref("checkpoint-10"), ref("checkpoint-400000")])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.list_repo_refs", lambda repo: fake)
    cfg = compose(["model=crfm-gpt2-small", "model.schedule=null"]).model
    assert [r.name for r in R.available(cfg)] == ["checkpoint-10", "checkpoint-400000"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert [r.name for r in R.available(cfg)] == ["checkpoint-10", "checkpoint-400000"]


# ---------------------------------------------------------------- presets

def test_every_preset_composes_and_validates():
    for f in sorted(CONF.glob("*.yaml")):
        cfg = compose([f"model={f.stem}"] + (["model.repo=/tmp"] if f.stem == "local" else []))
        check_model(resolved(cfg, "model"))


def test_seed_keys_name_the_runs():
    """CRFM: seed -> the run's name, in the repo (nested interpolation); PolyPythias: the seed in name and repo."""
    runs = {21: "alias", 49: "battlestar", 81: "caprica", 343: "darkmatter", 777: "expanse"}
    for seed, run in runs.items():
        m = compose(["model=crfm-gpt2-small", f"model.seed={seed}"]).model
        assert (m.name, m.repo, m.family) == (f"crfm-gpt2-small-x{seed}", f"stanford-crfm/{run}-gpt2-small-x{seed}",
                                              "crfm-gpt2-small")
    with pytest.raises(ConfigError, match=r"model.seed=50: must be one of 21, 49, 81, 343, 777"):
        check_model(resolved(compose(["model=crfm-gpt2-small", "model.seed=50"]), "model"))
    m = compose(["model=polypythia-410m", "model.seed=7"]).model
    assert (m.name, m.repo, m.family, m.seed) == ("pythia-410m-seed7", "EleutherAI/pythia-410m-seed7", "pythia-410m", 7)
    m = compose(["model=polypythia-160m-weight-seed", "model.seed=2"]).model
    assert m.repo == "EleutherAI/pythia-160m-weight-seed2" and m.family == "pythia-160m-weight-seed"


def test_multirun_over_seeds_composes_each():
    """`model=crfm-gpt2-small model.seed=21,49,81` in a multirun: Hydra's sweeper splits it into three jobs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["model=crfm-gpt2-small", "model.seed=21,49,81"])
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    repos = [compose(job).model.repo for job in jobs]
    assert repos == ["stanford-crfm/alias-gpt2-small-x21", "stanford-crfm/battlestar-gpt2-small-x49",
                     "stanford-crfm/caprica-gpt2-small-x81"]


def test_ls_models_lists_every_preset(tmp_path):
    p = ls("models", cache=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = {r.split()[0]: r.split() for r in p.stdout.splitlines()[1:]}
    assert set(rows) == {f.stem for f in CONF.glob("*.yaml")}
    # (arch, family/seed, layers x heads(kv) x d_head, checkpoints) by hand from the presets and their schedules:
    # CRFM 10+38+180+380 tags; Amber ckpt_000..358 and main; SmolLM3 86+19+13; Pythia's 154 branches.
    assert rows["crfm-gpt2-small"][2:5] + rows["crfm-gpt2-small"][6:7] == ["gpt2", "crfm-gpt2-small/21", "12x12x64",
                                                                          "608"]
    assert rows["amber"][2] == "llama" and rows["amber"][6] == "360"
    assert rows["smollm3-3b"][2:5] + rows["smollm3-3b"][6:7] == ["smollm3", "-", "36x16(4)x128", "118"]
    assert rows["polypythia-160m"][2:5] + rows["polypythia-160m"][6:7] == ["gpt_neox", "pythia-160m/1", "12x12x64",
                                                                          "154"]
    assert rows["pythia-160m"][3] == "pythia-160m/1234" and rows["olmo3-1025-7b"][5] == "4.2M/2.1M/4.2M"
    assert rows["olmo2-1124-7b"][6] == "?"  # no schedule, nothing cached


def test_name_schemes():
    """Each scheme's name, parsed: (step, billions in the name, stage, ingredient, index)."""
    from harness.sources.names import parse

    cases = {
        "step1000": (1000, None, None, None, False), "step1000-tokens2B": (1000, 2, None, None, False),
        "stage1-step140000-tokens294B": (140000, 294, 1, None, False),
        "stage2-ingredient3-step6000-tokens13B": (6000, 13, 2, 3, False), "stage3-step11921": (11921, None, 3, None,
                                                                                              False),
        "stage1-step-40000": (40000, None, 1, None, False), "step-001000-2BT": (1000, 2, None, None, False),
        "ckpt_042": (42, None, None, None, True), "checkpoint-1000": (1000, None, None, None, False),
        "global_step1000": (1000, None, None, None, False), "iter-1000": (1000, None, None, None, False),
        "step-240000": (240000, None, None, None, False), "1000": (1000, None, None, None, False),
        "main": (None, None, None, None, False), "lc-4k-to-32k": (None, None, None, None, False),
    }
    for name, want in cases.items():
        n = parse(name)
        assert (n.step, n.btokens, n.stage, n.ingredient, n.index) == want, name

