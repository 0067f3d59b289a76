#!/usr/bin/env bash
# The probe values of the smoke suites, as sha256 of every heads.parquet: run before and after a refactor and
# diff the two outputs; a refactor that changes no probe value prints the same lines.
#   dev/fingerprint.sh [scratch dir] > before.txt
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-$(mktemp -d)}
export HF_HUB_CACHE=$dir/hub HF_HUB_OFFLINE=1 WANDB_MODE=disabled
python -m harness.zoo smoke=true progress=false jobs=1 cache_dir="$HF_HUB_CACHE" >/dev/null
for s in neox olmo olmoe; do
  python -m harness experiment_name=fp model=zoo-$s probe=all logger=none runner.progress_bar=false \
    data.n=200 paths.results_dir="$dir/results" hydra.run.dir="$dir/hydra" >/dev/null 2>&1
done
cd "$dir/results" && find . -name heads.parquet | sort | xargs sha256sum
