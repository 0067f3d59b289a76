"""Every option of every config group composes and resolves."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "revisions", "probe", "data", "runner", "logger", "paths", "experiment")


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes(group, option):
    extra = ["model.repo=/tmp/some-run"] if (group, option) == ("model", "local") else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}", *extra])
    OmegaConf.resolve(cfg)
    assert cfg.model.name and cfg.probe and cfg.runner.dtype in ("float32", "bfloat16", "float16")
    assert cfg.data.vocab_hi > cfg.data.vocab_lo


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), g
    assert (CONF / "local").is_dir()  # `optional local` group: git-ignored machine settings


def test_experiment_overrides_primary_values():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=zoo"])
        paper = compose("config", overrides=["experiment=paper", "model=pythia-1b"])
    assert cfg.experiment_name == "zoo"
    assert paper.experiment_name == "paper" and paper.revisions.select == "paper" and "pr" in paper.probe


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_passes_the_schema(group, option):
    """Every shipped option satisfies the schema (harness/config/schema.py): a new field in a model file, a probe
    option outside its range or a grid option the schema does not know fails here, not in a user's job."""
    from harness.config import schema

    needs = {("model", "local"): ["model.repo=/tmp/some-run"], ("revisions", "list"): ["revisions.names=[step1]"]}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}", *needs.get((group, option), [])])
    schema.validate(cfg)
