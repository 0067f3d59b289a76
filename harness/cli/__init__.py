"""Entry points: `circuit-trajectories [<command>] [overrides...]`, the same as `python -m harness [<command>] ...`.

    (none)    probe a model's revisions (a Hydra job or multirun)     harness.cli.sweep
    analyze   findings of every model of an experiment                harness.cli.analyze
    report    the cross-architecture HTML and W&B reports             harness.cli.report
    ls        models, revisions and probes                            harness.cli.ls
    zoo       build the embedded checkpoint suites                    harness.cli.zoo
    bench     the capture engine's benchmark                          harness.bench.measure
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"analyze": "harness.cli.analyze", "report": "harness.cli.report", "ls": "harness.cli.ls",
            "zoo": "harness.cli.zoo", "bench": "harness.bench.measure"}


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in COMMANDS:
        sys.argv = [f"{sys.argv[0]} {args[0]}", *args[1:]]
        result = importlib.import_module(COMMANDS[args[0]]).main()
        sys.exit(result if isinstance(result, int) else 0)
    from harness.cli import sweep

    sweep.cli()
