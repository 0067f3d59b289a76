"""`python -m harness`: compose the config, run the job, exit with a one-line error on bad input."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness import launchers
from harness.errors import HarnessError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from harness import job  # heavy imports after Hydra has parsed --help

    try:
        job.run(cfg)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *launchers.expand_shards(sys.argv[1:])]  # revisions.shard="range(0,4)/4"
    problem = launchers.missing_plugin(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
