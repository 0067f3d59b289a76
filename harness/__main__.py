"""`python -m harness`: compose the config, run the job, exit with a one-line error on bad input."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness import launchers
from harness.errors import harness_cause


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from harness import job  # heavy imports after Hydra has parsed --help

    try:
        job.run(cfg)
    except Exception as e:  # noqa: BLE001 - ours (possibly inside Hydra's instantiate) -> one line
        cause = harness_cause(e)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # job.run's finally has closed the W&B run; every stored result is complete
        print("interrupted: finished revisions are stored; run the same command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *launchers.expand_shards(sys.argv[1:])]  # revisions.shard="range(0,4)/4"
    problem = launchers.unknown_option(sys.argv[1:]) or launchers.missing_plugin(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
