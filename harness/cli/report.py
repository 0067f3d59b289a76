"""`python -m harness.report paths.results_dir=<dir> experiment_name=<name> [models=[a,b]]`

Writes <dir>/<name>/report.html (every model of the experiment, analysed first where its findings are missing
or older than its results) and the W&B report: saved when W&B is online, else <dir>/<name>/wandb_report.json.
Composed from the same conf/config.yaml as `python -m harness` (paths.*, experiment_name, logger, local).
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.common.errors import HarnessError
from harness.common.paths import CONF_DIR
from harness.run.report import write_report


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        write_report(cfg)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
