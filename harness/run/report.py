"""The experiment's reports from a composed config: `python -m harness report` and `harness.api.report` call it.

Writes <paths.results_dir>/<experiment_name>/report.html (every model of the experiment, analysed first where its
findings are missing or older than its results) and the W&B report: saved when W&B is online, else
<paths.results_dir>/<experiment_name>/wandb_report.json.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def write_report(cfg: DictConfig) -> Path:
    """report.html and the W&B report of `cfg.experiment_name` (`cfg.models`: the model folders, null = all);
    prints where they are and returns the page."""
    from harness.analysis import Rules
    from harness.config import schema
    from harness.report import wandb_report
    from harness.report.collect import collect
    from harness.report.html import build_html
    from harness.tracking.tracker import wandb_mode

    schema.validate_store_args(cfg)
    models = collect(cfg.paths.results_dir, cfg.experiment_name, cfg.get("models"), Rules.from_config(cfg.analysis))
    out_dir = Path(cfg.paths.results_dir) / cfg.experiment_name
    page = out_dir / "report.html"
    page.write_text(build_html(models, f"circuit-trajectories: {cfg.experiment_name}"), encoding="utf-8")
    print(f"report: {page}")
    logger = cfg.get("logger") or {}
    where = wandb_report.publish({name: f for name, (f, _) in models.items()}, cfg.experiment_name,
                                 out_dir / "wandb_report.json", project=logger.get("project", "circuit-trajectories"),
                                 entity=logger.get("entity"), mode=wandb_mode(logger.get("mode", "auto")))
    print(f"W&B report: {where}")
    return page
