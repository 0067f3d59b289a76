"""circuit-trajectories' Hydra plugins (Hydra finds plugins only in the `hydra_plugins` namespace package).

- `presets.LauncherPresets`: our conf/hydra/launcher/<name>.yaml replace the launcher plugins' own configs of
  the same name (hydra/launcher=joblib, submitit_local, submitit_slurm, ray keep their familiar names).
- `capped_local.CappedLocalLauncher`: submitit's local launcher with a cap on concurrent jobs.
"""
