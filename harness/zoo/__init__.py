"""The embedded checkpoint suites: tiny GPT-NeoX, OLMo and OLMoE models trained here on CPU, in which
induction circuits and attention sinks form, published as hub-cache revisions (`python -m harness.zoo`)."""
from harness.zoo.train import ZooError, build_suite, check_until, checkpoint_steps, recipe_hash

__all__ = ["ZooError", "build", "build_suite", "checkpoint_steps", "recipe_hash"]


def _build_one(args: tuple) -> dict:
    """One suite in a worker process (spawned: torch threads are set before any work)."""
    import torch

    name, recipe, cache, force, progress, threads, until, position = args
    torch.set_num_threads(threads)
    return build_suite(name, recipe, cache, force=force, progress=progress, position=position, until=until)


def build(cfg) -> list[dict]:
    """Build the suites selected by a `conf/zoo/build.yaml` config; returns one summary per suite, in order.

    With `jobs` > 1 the suites are built in that many parallel processes of `threads` torch threads each
    (every suite is seeded on its own, so the result does not depend on `jobs`)."""
    import torch
    from omegaconf import OmegaConf

    todo = []
    for name in cfg.suites:
        if name not in cfg.suite:
            raise ZooError(f"unknown zoo suite '{name}' (valid: {', '.join(cfg.suite)})")
        recipe = OmegaConf.to_container(cfg.suite[name], resolve=True)
        recipe["seed"] = cfg.seed
        if cfg.smoke:
            recipe.update(OmegaConf.to_container(cfg.smoke_recipe, resolve=True))
        if cfg.get("until") is not None:
            check_until(recipe, int(cfg.until))  # before any worker starts
        todo.append((name, recipe, cfg.cache_dir, cfg.force, cfg.progress, cfg.threads, cfg.get("until")))
    jobs = min(int(cfg.get("jobs", 1) or 1), len(todo))
    if jobs <= 1:
        torch.set_num_threads(cfg.threads)
        return [_build_one((*t, None)) for t in todo]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_build_one, [(*t, i) for i, t in enumerate(todo)]))
