"""`python -m harness analyze paths.results_dir=<dir> experiment_name=<name> [models=[a,b]]`: the findings of
every model folder under <dir>/<name>/ (findings.json, trajectory.parquet, heads_events.parquet beside it), and
of every family of seeds among them (<dir>/<name>/families/<family>.json).

Composed from the same conf/config.yaml as `python -m harness`; thresholds in conf/analysis/default.yaml.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.common.errors import HarnessError
from harness.common.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from harness.analysis import Rules, analyze_experiment, analyze_families
    from harness.config import schema

    try:
        schema.validate_store_args(cfg)
        found = analyze_experiment(cfg.paths.results_dir, cfg.experiment_name, cfg.models,
                                   Rules.from_config(cfg.analysis))
        families = analyze_families(Path(cfg.paths.results_dir) / cfg.experiment_name, found)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for findings in found.values():
        for line in findings["summary"]:
            print(line)
    print(f"findings: {len(found)} model(s) under {cfg.paths.results_dir}/{cfg.experiment_name}/<model>/findings.json")
    for family, fam in families.items():
        print(f"family {family}: {fam['n_seeds']} seeds ({', '.join(fam['models'])}) -> "
              f"{cfg.paths.results_dir}/{cfg.experiment_name}/families/")


if __name__ == "__main__":
    main()
