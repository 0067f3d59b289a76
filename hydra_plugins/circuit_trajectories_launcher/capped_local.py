"""submitit's local launcher with at most `array_parallelism` jobs running at once.

The plugin's own LocalLauncher hands the whole sweep to submitit's local executor, which starts every job
at once (30 jobs of a 1B model = 30 processes loading weights). This subclass keeps a sliding window:
`array_parallelism` threads each hand one job at a time to the plugin's launch(), so a new job starts as
soon as one finishes; each job still runs in its own fresh process through the same executor.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

try:  # the launchers extra; without it this module defines nothing (and Hydra's plugin scan stays quiet)
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
except ImportError:  # pragma: no cover - exercised only without the extra
    LocalLauncher = None

if LocalLauncher is not None:

    class CappedLocalLauncher(LocalLauncher):
        def __init__(self, array_parallelism: int = 2, **params: Any) -> None:
            if int(array_parallelism) < 1:
                raise ValueError(f"hydra.launcher.array_parallelism must be >= 1, got {array_parallelism}")
            super().__init__(**params)
            self.array_parallelism = int(array_parallelism)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            one = super().launch  # bound here: zero-argument super() does not work inside the lambda below
            with ThreadPoolExecutor(self.array_parallelism, thread_name_prefix="submitit-local") as pool:
                futures = [pool.submit(one, [overrides], initial_job_idx + i)
                           for i, overrides in enumerate(job_overrides)]
                return [f.result()[0] for f in futures]
