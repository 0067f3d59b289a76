"""`python -m harness.report paths.results_dir=<dir> experiment_name=<name> [models=[a,b]]`

Writes <dir>/<name>/report.html (every model of the experiment, analysed first where its findings are missing
or older than its results) and the W&B report: saved when W&B is online, else <dir>/<name>/wandb_report.json.
Composed from the same conf/config.yaml as `python -m harness` (paths.*, experiment_name, logger, local).
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.common.errors import HarnessError
from harness.common.paths import CONF_DIR


def run(cfg: DictConfig) -> Path:
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


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
