"""Local-only models (the embedded suites, model=local) never ask the hub and print no hub warning.

The hub endpoint points at a closed local port: any request the harness made would fail at once and
print the "Could not reach the Hub" / "cannot list revisions ... on the hub" warnings this test looks for.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
          "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
HUB_WARNINGS = ("Could not reach the Hub", "on the hub", "hub offline", "Using cached commit hash")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from harness.zoo import build

    cache = tmp_path_factory.mktemp("hub")
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "zoo"), version_base="1.3"):
        cfg = compose("build", overrides=[f"cache_dir={cache}", "smoke=true", "progress=false", "jobs=1",
                                          "suites=[neox]"])
    assert [r["status"] for r in build(cfg)] == ["built"]
    return cache


def test_zoo_suite_runs_without_the_hub(hub, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "model=zoo-neox", "revisions=all", "data.n=40", "data.seq_len=64",
         "runner.device=cpu", "runner.progress_bar=false", "logger=none", f"paths.root_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_CACHE": str(hub), **NO_HUB})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not [line for line in out.splitlines() if any(w in line for w in HUB_WARNINGS)], out[-3000:]
    model_dir = tmp_path / "results" / "default" / "zoo-neox"
    assert len([p for p in model_dir.iterdir() if (p / "summary.json").exists()]) >= 2


def test_local_folder_runs_without_the_hub(tmp_path):
    from conftest import tiny_model
    from test_e2e import common, harness

    tiny_model("olmo").save_pretrained(tmp_path / "ckpts" / "step0")
    proc = harness(*common(tmp_path, tmp_path / "ckpts", "tiny", probe="all"), "logger=none", env=NO_HUB)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not [line for line in out.splitlines() if any(w in line for w in HUB_WARNINGS)], out[-3000:]
