#!/usr/bin/env bash
# The embedded suites on their full grid: build them if missing (each probed while it trains, on a log schedule),
# probe every other revision of all three (the live results reused), then the cross-architecture report.
# (`make demo` stops at the live results: the builds, then the report.)
#   sweeps/zoo.sh [basic|joblib|submitit_local|submitit_slurm|ray] [hydra overrides...]
set -euo pipefail
source "$(dirname "$0")/launcher.sh"
python -m harness.zoo
python -m harness -m experiment=zoo model=zoo-neox,zoo-olmo,zoo-olmoe "${LAUNCH[@]}" "$@"
# The report composes the same config: pass on only what says where results and W&B live.
shared=()
for a in "$@"; do case "$a" in paths.*|logger=*|logger.*|local=*) shared+=("$a") ;; esac; done
python -m harness.report experiment_name=zoo "${shared[@]}"
