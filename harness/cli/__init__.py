"""Entry points: `circuit-trajectories [<command>] [overrides...]`, the same as `python -m harness [<command>] ...`.

    (none)    probe a model's revisions (a Hydra job or multirun)     harness.cli.sweep
    analyze   findings of every model of an experiment                harness.cli.analyze
    report    the cross-architecture HTML and W&B reports             harness.cli.report
    ls        models, revisions and probes                            harness.cli.ls
    zoo       build the embedded checkpoint suites                    harness.cli.zoo
    watch     probe a training run's checkpoints as it saves them     harness.cli.watch
    bench     the capture engine's benchmark                          harness.bench.measure
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"analyze": "harness.cli.analyze", "report": "harness.cli.report", "ls": "harness.cli.ls",
            "zoo": "harness.cli.zoo", "bench": "harness.bench.measure", "watch": "harness.cli.watch"}
HYDRA_APPS = ("analyze", "report", "watch")


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in COMMANDS:
        sys.argv = [f"{sys.argv[0]} {args[0]}", *args[1:]]
        if args[0] in HYDRA_APPS:  # composed from conf/config.yaml as a sweep is: the same one-line checks
            from harness.cli import launchers

            problem = launchers.unknown_option(args[1:]) or launchers.unknown_key(args[1:])
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                sys.exit(2)
        result = importlib.import_module(COMMANDS[args[0]]).main()
        sys.exit(result if isinstance(result, int) else 0)
    from harness.cli import sweep

    sweep.cli()
