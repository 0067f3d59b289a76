"""Devices: the one a job runs on (`runner.device`, checked before any checkpoint is loaded), and one GPU per job
when a sweep runs several jobs on one multi-GPU machine (joblib, submitit_local).

    CUDA_VISIBLE_DEVICES=0,1,2,3 python -m harness -m ... hydra/launcher=joblib hydra.launcher.n_jobs=4

Every job process sees all four devices; before anything touches CUDA, the job claims the first device no
other job of the sweep holds (one lock file per device under the sweep folder, held until the process exits)
and narrows CUDA_VISIBLE_DEVICES to it. A joblib worker keeps its device for all the jobs it runs. More
workers than devices: the extra ones share a device (never wait: a waiting worker could wait forever on idle
workers that hold the locks). With one visible device (SLURM's gres, Ray's num_gpus) or none, nothing happens.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import torch

from harness.common.errors import HarnessError

log = logging.getLogger("harness.run.devices")
_held: list = []  # open lock files: the claim lasts as long as this process


def claim(lock_dir: Path, job_num: int = 0) -> str | None:
    """Narrow CUDA_VISIBLE_DEVICES (a list of several) to one device no other process holds, else (all held)
    to device job_num mod n, shared. Returns the device, or None when there was nothing to choose."""
    devices = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(devices) < 2:
        return None
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    for d in devices:
        fh = open(lock_dir / f"gpu-{d}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        _held.append(fh)
        os.environ["CUDA_VISIBLE_DEVICES"] = d
        log.info("this job runs on GPU %s (of %s)", d, ",".join(devices))
        return d
    d = devices[job_num % len(devices)]
    os.environ["CUDA_VISIBLE_DEVICES"] = d
    log.warning("every GPU of %s is held by another job of this sweep: sharing GPU %s (use as many workers as "
                "GPUs)", ",".join(devices), d)
    return d


def claim_one_per_job() -> str | None:
    """claim() in a multirun job (locks under the sweep folder); single runs keep every visible device."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    return claim(Path(hc.sweep.dir) / ".gpus", int(hc.job.get("num") or 0))


class DeviceError(HarnessError, RuntimeError):
    pass


def devices() -> list[str]:
    """The devices this machine has, as runner.device spells them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def target_device(requested: str) -> str:
    """Where the weights should land: Lightning accelerator names -> a torch device. A device this machine
    does not have is refused here, before any checkpoint is loaded (torch would say "Torch not compiled with
    CUDA enabled" from inside from_pretrained)."""
    requested = str(requested)
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    want = "cuda" if requested == "gpu" else requested
    if want not in devices():
        why = {"mps": "MPS needs Apple silicon and macOS"}.get(want, "no CUDA device is visible" if
              torch.version.cuda else f"this torch ({torch.__version__}) is built without CUDA")
        raise DeviceError(f"runner.device={requested}: {why}; devices here: {', '.join(devices())} "
                              f"(or runner.device=auto)")
    return want
