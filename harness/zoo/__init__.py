"""The embedded checkpoint suites: tiny GPT-NeoX, OLMo and OLMoE models trained here on CPU, in which
induction circuits and attention sinks form, published as hub-cache revisions (`python -m harness.zoo`)."""
import contextlib
import os
import platform

from harness.common.seeds import seeded
from harness.zoo import live as zoo_live
from harness.zoo.train import ZooError, build_suite, check_until, checkpoint_steps, recipe_hash

__all__ = ["ZooError", "build", "build_suite", "checkpoint_steps", "recipe_hash"]

# The vector instruction set the builds compute with. ATen's vectorised kernels and oneDNN round differently
# with AVX2 and AVX-512 (MKL may too), and training amplifies that into different suites: the OLMo sink came at
# 2.2x the circuit's tokens on one machine and 1.4x on an AVX-512 one. Pinned to AVX2, every x86-64 machine
# with AVX2 computes the same bits (same torch, same threads). The variables are read when torch first
# dispatches a kernel, so they are set for the spawned build processes, never in a running one.
ISA_ENV = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "native": {},  # the machine's own: faster on some machines, a suite that depends on the machine
}


def _build_one(args: tuple) -> dict:
    """One suite in a worker process (spawned: torch threads are set before any work)."""
    import torch

    name, recipe, cache, force, progress, threads, until, live, position = args
    torch.set_num_threads(threads)
    return build_suite(name, recipe, cache, force=force, progress=progress, position=position, until=until,
                       live=live)


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive a killed build (it would go on publishing into the cache beside the rerun):
    Linux sends it SIGKILL when the parent dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed build's worker finishes its suite
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


@contextlib.contextmanager
def _environ(values: dict):
    """`values` in os.environ for the block (the processes started in it inherit them), then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(cfg) -> list[dict]:
    """Build the suites selected by a `conf/zoo/build.yaml` config; returns one summary per suite, in order.

    Each suite is built in a spawned process (`jobs` at a time, `threads` torch threads each) that computes
    with the pinned instruction set `isa`: every suite is seeded on its own, so the result depends on neither
    `jobs` nor the machine, only on the recipe, `threads` and `isa` (all three in the recipe hash)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from omegaconf import OmegaConf

    if cfg.isa not in ISA_ENV:
        raise ZooError(f"unknown isa '{cfg.isa}' (valid: {', '.join(ISA_ENV)})")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ZooError(f"seed={cfg.seed}: must be an integer >= 0")
    live = OmegaConf.to_container(cfg.live, resolve=True) if cfg.get("live") else {"enabled": False}
    try:
        probing = zoo_live.enabled(live, cfg.smoke)
    except ValueError as e:
        raise ZooError(str(e)) from None
    todo = []
    for name in cfg.suites:
        if name not in cfg.suite:
            raise ZooError(f"unknown zoo suite '{name}' (valid: {', '.join(cfg.suite)})")
        recipe = OmegaConf.to_container(cfg.suite[name], resolve=True)
        recipe["seed"] = cfg.seed
        # Each seed is its own repo (seed 0 keeps the plain name, so its recipe hash is unchanged); the model
        # presets name it with the same rule: `model=zoo-neox model.seed=1` probes what `seed=1` built.
        recipe["repo"] = seeded(recipe["repo"], cfg.seed)
        if cfg.smoke:
            recipe.update(OmegaConf.to_container(cfg.smoke_recipe, resolve=True))
        recipe["compute"] = dict(threads=cfg.threads, isa=cfg.isa)
        if cfg.get("until") is not None:
            check_until(recipe, int(cfg.until))  # before any worker starts
        if probing:
            try:
                zoo_live.check(name, recipe, live, cfg.cache_dir)  # the probe config too
            except ValueError as e:
                raise ZooError(str(e)) from None
        todo.append((name, recipe, cfg.cache_dir, cfg.force, cfg.progress, cfg.threads, cfg.get("until"),
                     live if probing else None))
    jobs = max(1, min(int(cfg.get("jobs", 1) or 1), len(todo)))
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    with _environ(ISA_ENV[cfg.isa] if x86 else {}), \
            ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_die_with_parent,
                                initargs=(os.getpid(),)) as pool:
        return list(pool.map(_build_one, [(*t, i if jobs > 1 else None) for i, t in enumerate(todo)]))
