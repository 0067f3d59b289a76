"""Python API for notebooks: the functions the command line calls, on the same configs and the same result store.

    compose(overrides=())                             the job's config, as `circuit-trajectories <overrides>` composes it
    run(overrides)                                    probe one model's revisions (one job) -> {revision: result folder}
    trajectory(experiment, model, results_dir)        one row per revision x layer x head, every metric (a DataFrame)
    findings(experiment, model=None, results_dir)     when the circuits formed (findings.json; analysed if missing)
    report(experiment, results_dir, models=None)      report.html of the experiment, as `circuit-trajectories report`

Example::

    from harness import api
    api.run(["model=zoo-neox", "revisions=log", "revisions.n=5", "probe=selectivity"])
    df = api.trajectory("default", "zoo-neox")
    df.groupby("tokens")["selectivity.induction"].max()
    api.findings("default", "zoo-neox")["summary"]
    api.report("default")                      # results/default/report.html

Configs come from harness.common.paths.CONF_DIR (the checkout's conf/ or the installed package's copy); results
from `results_dir` (the command line's default, `results/` under the working directory, is the default here too).
Errors are harness.common.errors.HarnessError (the command line's one-line errors) raised as exceptions.
Heavy modules (torch, transformers, plotly) are imported when a function needs them, not with this module.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["compose", "findings", "report", "run", "trajectory"]


def compose(overrides: Sequence[str] = ()):
    """The config `circuit-trajectories <overrides>` would run (conf/config.yaml + Hydra overrides), as a DictConfig.

    Example::

        cfg = api.compose(["model=pythia-70m", "revisions=paper"])
        cfg.model.repo, cfg.revisions.select
    """
    from harness.config.compose import compose as compose_config

    return compose_config(overrides)


def run(overrides: Sequence[str]) -> dict:
    """Run one job, as `circuit-trajectories <overrides>` does (no multirun): probe the model's revisions (reusing
    complete results), store them, analyse and plot the model when its grid is complete. Returns {revision name:
    result folder}.

    Example::

        api.run(["model=local", "model.repo=/runs/my-model", "revisions=log", "logger=none"])
    """
    from harness.run import job

    return job.run(compose(overrides))


def _rules():
    """The findings' parameters of conf/analysis/default.yaml (what `circuit-trajectories analyze` uses)."""
    from omegaconf import OmegaConf

    from harness.analysis import Rules
    from harness.common.paths import CONF_DIR

    return Rules.from_config(OmegaConf.load(CONF_DIR / "analysis" / "default.yaml"))


def _model_dir(results_dir, experiment: str, model: str) -> Path:
    from harness.analysis import model_dirs

    return model_dirs(results_dir, experiment, [model])[0]  # an unknown model: the analysis' one-line error


def trajectory(experiment: str, model: str, results_dir: str | Path = "results"):
    """One model's results as a pandas DataFrame: one row per revision x layer x head, in training order, with
    columns revision, step, tokens, layer, head and every probe metric (`<probe>.<metric>`). Reads the store only.

    Example::

        df = api.trajectory("zoo", "zoo-neox")
        df.pivot_table(index="tokens", columns=["layer", "head"], values="selectivity.induction")
    """
    from harness.analysis import load

    found = load.trajectory(_model_dir(results_dir, experiment, model))
    return found.frame


def findings(experiment: str, model: str | None = None, results_dir: str | Path = "results") -> dict:
    """The findings of one model (its findings.json as a dict), or with model=None {model: findings} for every
    model of the experiment. A model whose findings are missing, older than its results or computed under other
    rules is analysed first (as `circuit-trajectories analyze` does; no model is loaded).

    Example::

        f = api.findings("zoo", "zoo-neox")
        print("\\n".join(f["summary"]))
    """
    from harness.analysis import analyze_model, load_findings, model_dirs
    from harness.report.collect import stale

    rules = _rules()

    def one(d: Path) -> dict:
        return analyze_model(d, rules) if stale(d, rules) else load_findings(d)[0]

    if model is not None:
        return one(_model_dir(results_dir, experiment, model))
    return {d.name: one(d) for d in model_dirs(results_dir, experiment)}


def report(experiment: str, results_dir: str | Path = "results", models: Sequence[str] | None = None,
           overrides: Sequence[str] = ()) -> Path:
    """Write <results_dir>/<experiment>/report.html (every model, or `models`, side by side; analysed first where
    needed) and the W&B report, as `circuit-trajectories report` does; returns the page's path. `overrides` are
    Hydra overrides of the rest of the config, e.g. ["logger=none"] for no W&B report.

    Example::

        page = api.report("zoo", models=["zoo-neox", "zoo-olmo"], overrides=["logger=none"])
        import webbrowser; webbrowser.open(page.resolve().as_uri())
    """
    from harness.run.report import write_report

    cfg = compose(overrides)
    cfg.paths.results_dir = str(results_dir)
    cfg.experiment_name = experiment
    if models is not None:
        cfg.models = list(models)
    return write_report(cfg)
