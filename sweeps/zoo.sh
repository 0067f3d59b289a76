#!/usr/bin/env bash
# The embedded default: build the zoo suites if missing, probe all three, then the cross-architecture report.
#   sweeps/zoo.sh [basic|joblib|submitit_local|submitit_slurm|ray] [hydra overrides...]
set -euo pipefail
source "$(dirname "$0")/launcher.sh"
python -m harness.zoo
python -m harness -m experiment=zoo model=zoo-neox,zoo-olmo,zoo-olmoe "${LAUNCH[@]}" "$@"
# The report composes the same config: pass on only what says where results and W&B live.
shared=()
for a in "$@"; do case "$a" in paths.*|logger=*|logger.*|local=*) shared+=("$a") ;; esac; done
python -m harness.report experiment_name=zoo "${shared[@]}"
