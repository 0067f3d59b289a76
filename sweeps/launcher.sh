# Sourced by the sweep recipes: pick the Hydra launcher from the recipe's first argument when it names one,
# else from $LAUNCHER, else basic (one job after another in this process). Sets LAUNCH (an override list).
#   sweeps/zoo.sh joblib hydra.launcher.n_jobs=3        LAUNCHER=submitit_slurm sweeps/paper.sh
launcher="${LAUNCHER:-basic}"
case "${1:-}" in
  basic|joblib|submitit_local|submitit_slurm|ray) launcher="$1"; shift ;;
esac
LAUNCH=("hydra/launcher=$launcher")
