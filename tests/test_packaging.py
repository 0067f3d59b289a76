"""Packaging and the Python API: the wheel carries conf/ (so an install outside a checkout runs), declares the
`circuit-trajectories` console script, and harness.api reads a real result store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "harness", "probes", "hydra_plugins", "conf")  # what a clone holds


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built without network (the venv's setuptools) from a copy of the sources, as pip builds
    `pip install git+<repo>` (the copy keeps build/ and *.egg-info out of the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    (src / "conf" / "local" / "machine.yaml").write_text("# a git-ignored machine setting\n")  # must not ship
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("circuit_trajectories-*.whl")
    return whl


@pytest.fixture(scope="module")
def site(wheel) -> Path:
    """The wheel installed into a folder of its own (dependencies come from this venv)."""
    target = wheel.parent.parent / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python <args>` on the installed copy, run outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for pkg in ("harness", "probes", "hydra_plugins")
               for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    assert not modules - names, f"not in the wheel (add the package to pyproject.toml): {sorted(modules - names)}"
    configs = {"harness/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*.yaml")
               if p.parent.name != "local"}
    assert configs and not configs - names, sorted(configs - names)
    assert not [n for n in names if n.startswith("harness/conf/local/")]  # machine settings stay on the machine
    assert not [n for n in names if n.startswith(("conf/", "tests/"))]  # no top-level package but ours


def test_console_script_declared(wheel):
    with zipfile.ZipFile(wheel) as z:
        (ep,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = z.read(ep).decode()
    assert "[console_scripts]" in text and "circuit-trajectories = harness.cli:main" in text


def test_installed_wheel_runs_outside_the_checkout(site, tmp_path):
    check = ("import json, harness, hydra_plugins.circuit_trajectories_launcher.presets as presets\n"
             "from harness.common.paths import CONF_DIR\n"
             "from harness import api\n"
             "cfg = api.compose(['model=pythia-70m', 'revisions=paper', 'probe=paper'])\n"
             "print(json.dumps({'harness': harness.__file__, 'conf': str(CONF_DIR), 'presets': str(presets.CONF),\n"
             "                  'repo': cfg.model.repo, 'probes': sorted(cfg.probe)}))")
    proc = installed(site, tmp_path, "-c", check)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["harness"]).is_relative_to(site)
    assert Path(got["conf"]) == (site / "harness" / "conf").resolve() == Path(got["presets"])
    assert got["repo"] == "EleutherAI/pythia-70m" and {"selectivity", "pr", "null"} <= set(got["probes"])

    models = installed(site, tmp_path, "-m", "harness", "ls", "models")
    assert models.returncode == 0, models.stderr[-3000:]
    for f in (ROOT / "conf" / "model").glob("*.yaml"):
        assert f"\n{f.stem} " in models.stdout, (f.stem, models.stdout)
    probes = installed(site, tmp_path, "-m", "harness", "ls", "probes")
    assert probes.returncode == 0, probes.stderr[-3000:]
    assert "selectivity: selectivity (probes.selectivity.Selectivity)" in probes.stdout, probes.stdout
    assert "cannot import" not in probes.stdout  # every _target_ resolves to the installed probes
    assert not (tmp_path / "results").exists() and not list(tmp_path.iterdir())  # listing writes nothing


def test_api_on_a_real_store(tmp_path):
    from test_e2e import common, save_revisions

    from harness import api

    ckpts = tmp_path / "ckpts"
    save_revisions("gpt_neox", ckpts)
    overrides = [*common(tmp_path, ckpts, "tiny", probe="default"), "logger=none"]
    outputs = api.run(overrides)
    assert sorted(outputs) == ["step0", "step2", "step6"]
    results = tmp_path / "results"

    df = api.trajectory("default", "tiny", results_dir=results)
    assert len(df) == 3 * 2 * 4  # revisions x layers x heads
    assert {"revision", "step", "tokens", "layer", "head", "selectivity.induction", "selectivity.first_token",
            "selectivity.bos"} <= set(df.columns)
    assert list(df["revision"].drop_duplicates()) == ["step0", "step2", "step6"]

    (results / "default" / "tiny" / "findings.json").unlink()  # analysed again when missing
    f = api.findings("default", "tiny", results_dir=results)
    assert f["revisions"] == ["step0", "step2", "step6"] and f["summary"]
    assert (results / "default" / "tiny" / "findings.json").is_file()
    every = api.findings("default", results_dir=results)  # now read from findings.json
    assert list(every) == ["tiny"] and every["tiny"]["summary"] == f["summary"]

    page = api.report("default", results_dir=results, overrides=["logger=none"])
    assert page == results / "default" / "report.html" and page.is_file()
    assert "tiny" in page.read_text(encoding="utf-8")

    with pytest.raises(Exception, match="nope"):  # the analysis' one-line error names the missing model
        api.trajectory("default", "nope", results_dir=results)
