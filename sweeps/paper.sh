#!/usr/bin/env bash
# The published study: Pythia 1B, OLMo 1B 0724 and OLMoE 1B-7B 0924 at the study's ten revisions.
#   sweeps/paper.sh [basic|joblib|submitit_local|submitit_slurm|ray] [hydra overrides...]
# One job per (model, revision), e.g. on SLURM (30 array tasks):
#   sweeps/paper.sh submitit_slurm revisions.shard="range(0,10)/10" hydra.launcher.partition=<partition>
set -euo pipefail
source "$(dirname "$0")/launcher.sh"
python -m harness -m experiment=paper model=pythia-1b,olmo-1b-0724,olmoe-1b-7b-0924 "${LAUNCH[@]}" "$@"
