"""The embedded checkpoint suites: tiny GPT-NeoX, OLMo and OLMoE models trained here on CPU, in which
induction circuits and attention sinks form, published as hub-cache revisions (`python -m harness.zoo`)."""
from harness.zoo.train import build_suite, checkpoint_steps, recipe_hash

__all__ = ["build", "build_suite", "checkpoint_steps", "recipe_hash"]


def build(cfg) -> list[dict]:
    """Build the suites selected by a `conf/zoo/build.yaml` config; returns one summary per suite."""
    import torch
    from omegaconf import OmegaConf

    torch.set_num_threads(cfg.threads)
    results = []
    for name in cfg.suites:
        if name not in cfg.suite:
            raise ValueError(f"unknown zoo suite '{name}' (valid: {', '.join(cfg.suite)})")
        recipe = OmegaConf.to_container(cfg.suite[name], resolve=True)
        recipe["seed"] = cfg.seed
        if cfg.smoke:
            recipe.update(OmegaConf.to_container(cfg.smoke_recipe, resolve=True))
        results.append(build_suite(name, recipe, cfg.cache_dir, force=cfg.force, progress=cfg.progress))
    return results
