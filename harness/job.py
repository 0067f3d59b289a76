"""One job: every revision of the grid -> load -> probe loop -> result store -> tracker."""
from __future__ import annotations

import gc
import logging

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from harness import analysis, loader, loop, plots, revisions, store
from harness.arch import head_layout
from harness.data import check_vocab
from harness.errors import HarnessError
from harness.provenance import config_hash, now, package_versions
from probes.base import Context

log = logging.getLogger("harness")


class ProbeConfigError(HarnessError, ValueError):
    pass


def build_probes(probe_cfg: DictConfig) -> list:
    """The one instantiation loop: each single-key file in conf/probe adds one plug-in."""
    if not probe_cfg:
        raise ProbeConfigError("no probe selected (e.g. probe=selectivity; list them with `python -m harness.ls probes`)")
    return [instantiate(cfg, name=name) for name, cfg in probe_cfg.items() if cfg is not None]


def run(cfg: DictConfig) -> dict:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    probe_cfg = OmegaConf.to_container(cfg.probe, resolve=True)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    if model_cfg.get("vocab_size"):
        check_vocab(data_cfg["vocab_lo"], data_cfg["vocab_hi"], model_cfg["vocab_size"], model_cfg["name"])
    grid = revisions.select(cfg.model, cfg.revisions, revisions.available(cfg.model))
    probes = build_probes(cfg.probe)
    shared = instantiate(cfg.data)
    probe_hash = config_hash({"probe": probe_cfg, "data": data_cfg, "dtype": cfg.runner.dtype})
    log.info("%s: %d revisions x %d probes (%s)", model_cfg["name"], len(grid), len(probes), ", ".join(p.name for p in probes))

    # `config` is also instantiate()'s own first parameter, hence the partial.
    tracker = instantiate(cfg.logger, _partial_=True)(config=OmegaConf.to_container(cfg, resolve=True))
    outputs = {}
    try:
        for res in revisions.Prefetcher(cfg.model, grid):
            folder = store.revision_dir(cfg.paths.results_dir, cfg.experiment_name, model_cfg["name"], res.name)
            if store.reusable(folder, model_cfg["repo"], res.weights_hash, probe_hash):
                log.info("%s %s: reusing %s", model_cfg["name"], res.name, folder)
                heads, summary = store.read(folder)
            else:
                heads, summary = probe_revision(cfg, model_cfg, res, probes, shared, probe_cfg, probe_hash)
                summary["provenance"]["duplicate_of"] = res.duplicate_of  # the Prefetcher warns once
                store.write(folder, heads, summary)
            tracker.log_revision(revision=res.name, step=res.step, tokens=res.tokens, scalars=summary["scalars"],
                                 heads=heads, parquet_path=folder / "heads.parquet", provenance=summary["provenance"])
            outputs[res.name] = folder
            if not cfg.runner.keep_checkpoints:
                revisions.release(res)
        model_dir = store.revision_dir(cfg.paths.results_dir, cfg.experiment_name, model_cfg["name"], "")
        print(f"results: {model_dir}")
        plot = plots.trajectory(model_dir)
        if plot:
            print(f"plot:    {plot}")
        findings = analyze(model_dir, cfg.analysis)
        if findings:
            print("\n".join(findings["summary"]))
            print(f"findings: {model_dir / 'findings.json'}")
        print(f"W&B run: {tracker.url_or_path}")
        return outputs
    finally:
        tracker.finish()


def analyze(model_dir, rules_cfg) -> dict | None:
    """The model's findings over every revision in the store (this job's and earlier ones')."""
    try:
        return analysis.analyze_model(model_dir, analysis.Rules.from_config(rules_cfg))
    except analysis.AnalysisError as e:  # e.g. a probe set without the screen: nothing to analyse
        log.info("no findings: %s", e)
        return None


def probe_revision(cfg, model_cfg, res, probes, shared, probe_cfg, probe_hash):
    model = loader.load(res, cfg.runner.dtype, model_cfg["name"], loader.target_device(cfg.runner.device))
    layout = head_layout(model.config)
    check_vocab(shared.meta.get("vocab_lo", 0), shared.meta.get("vocab_hi", 1), model.config.vocab_size, model_cfg["name"])
    ctx = Context(layout, shared, model_cfg, res.name)
    groups = loop.group_by_batch(probes, shared, ctx)
    results = loop.run_checkpoint(model, groups, model_cfg=model_cfg, revision=res.name, runner=cfg.runner)
    del model
    gc.collect()
    heads = store.heads_frame(results, layout.n_layers, layout.n_heads)
    summary = {
        "scalars": store.flat_scalars(results),
        "info": {f"{name}.{k}": v for name, r in results.items() for k, v in r.info.items()},
        "provenance": {
            "model": model_cfg["name"], "repo": model_cfg["repo"], "revision": res.name, "step": res.step,
            "tokens": res.tokens, "commit": res.commit, "weights_hash": res.weights_hash,
            "dtype": cfg.runner.dtype, "device": cfg.runner.device,
            "layout": vars(layout), "probe_config": probe_cfg, "data": shared.meta,
            "probe_hash": probe_hash, "packages": package_versions(), "created": now(),
        },
    }
    return heads, summary
