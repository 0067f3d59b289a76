"""`python -m harness`: compose the config, run the job, exit with a one-line error on bad input."""
from __future__ import annotations

import signal
import sys

import hydra
from omegaconf import DictConfig

from harness.cli import launchers
from harness.common.errors import harness_cause
from harness.common.paths import CONF_DIR


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's preemption or time limit): stop as Ctrl-C does. Lightning's own SIGTERM
    handler only sets a flag that its predict loop never reads, so without this the job ran on."""


def _terminate(signum, frame):
    raise Terminated


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from harness.run import job  # heavy imports after Hydra has parsed --help

    signal.signal(signal.SIGTERM, _terminate)  # Lightning calls it after its own handler
    try:
        job.run(cfg)
    except Exception as e:  # noqa: BLE001 - ours (possibly inside Hydra's instantiate) -> one line
        cause = harness_cause(e)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # job.run's finally has closed the W&B run; every stored result is complete
        term = isinstance(e, Terminated)
        print(f"{'terminated' if term else 'interrupted'}: finished revisions are stored; run the same command "
              "again to resume", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if term else signal.SIGINT))


def cli() -> None:
    """Command-line checks Hydra cannot make or reports over many lines (launcher plugins, shard ranges, group
    options, keys), then the job."""
    sys.argv = [sys.argv[0], *launchers.expand_shards(sys.argv[1:])]  # revisions.shard="range(0,4)/4"
    args = sys.argv[1:]
    problem = launchers.unknown_option(args) or launchers.missing_plugin(args) or launchers.unknown_key(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
