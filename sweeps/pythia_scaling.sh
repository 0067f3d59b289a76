#!/usr/bin/env bash
# Scaling: the Pythia family, 70m to 12b, at 10 log-spaced revisions each (revisions=log), one job per
# (model, revision): 8 x 10 = 80 jobs. SHARDS=<n> splits each grid into n jobs instead (1 = a job per model).
#   sweeps/pythia_scaling.sh [basic|joblib|submitit_local|submitit_slurm|ray] [hydra overrides...]
#   sweeps/pythia_scaling.sh submitit_slurm hydra.launcher.partition=<partition>    # 80 array tasks, 1 GPU each
# Checkpoints are deleted once probed (runner.keep_checkpoints=false: 10 revisions of 12b are ~240 GB);
# relaunching the same command recomputes only what is missing from the store.
set -euo pipefail
source "$(dirname "$0")/launcher.sh"
shards="${SHARDS:-10}"
python -m harness -m experiment_name=pythia_scaling revisions=log \
  model=pythia-70m,pythia-160m,pythia-410m,pythia-1b,pythia-1.4b,pythia-2.8b,pythia-6.9b,pythia-12b \
  "revisions.shard=range(0,$shards)/$shards" runner.keep_checkpoints=false "${LAUNCH[@]}" "$@"
