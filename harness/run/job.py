"""One job: its revisions of the grid -> reuse or (download, load, probe loop) -> result store -> tracker.

Jobs are idempotent: a revision whose complete result is in the store is skipped before its checkpoint is
downloaded, so a sweep killed at any point and relaunched with the same command computes only what is missing.
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from types import SimpleNamespace

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from harness import analysis
from harness.analysis import families
from harness.capture import loader
from harness.capture.arch import head_layout, text_config
from harness.capture.batches import VERSION as BATCH_VERSION
from harness.capture.batches import check_vocab
from harness.common.errors import HarnessError
from harness.config import schema
from harness.report import png
from harness.results import store
from harness.results.provenance import config_hash, now, package_versions
from harness.run import devices, loop, progress
from harness.sources import checkpoints, revisions
from probes.base import Context

log = logging.getLogger("harness")


class ProbeConfigError(HarnessError, ValueError):
    pass


def build_probes(probe_cfg: DictConfig) -> list:
    """The one instantiation loop: each single-key file in conf/probe adds one plug-in."""
    if not probe_cfg:
        raise ProbeConfigError("no probe selected (e.g. probe=selectivity; list them with `python -m harness ls probes`)")
    probes = []
    for name, cfg in probe_cfg.items():
        if cfg is not None:
            probe = instantiate(cfg)
            probe.name = name  # the yaml key: the probe's column prefix in the store
            probes.append(probe)
    return probes


def declared(probes: list) -> dict:
    """What the probes declare, recorded with every result: their versions (part of the reuse key), the columns
    that play a standard role (`signals`, read by the findings and reports) and the thresholds they classify
    heads with. Two probes that apply the same threshold must agree on it (one source: `thresholds.*`)."""
    thresholds, source = {}, {}
    for p in probes:
        for key, value in p.thresholds().items():
            if key in thresholds and thresholds[key] != value:
                raise ProbeConfigError(
                    f"probe {p.name} classifies with {key}={value} but probe {source[key]} with {thresholds[key]}: "
                    f"set the threshold once, thresholds.{key}=<value>, not per probe")
            thresholds.setdefault(key, value)
            source.setdefault(key, p.name)
    signals = {role: f"{p.name}.{metric}" for p in probes for role, metric in p.signals.items()}
    return {"versions": {p.name: p.version for p in probes}, "signals": signals, "thresholds": thresholds}


def reuse_key(cfg: DictConfig, declares: dict) -> str:
    """What makes two results of one checkpoint the same: the probe and data options, the dtype, the probes' and
    the batch builder's versions."""
    return config_hash({"probe": OmegaConf.to_container(cfg.probe, resolve=True),
                        "data": OmegaConf.to_container(cfg.data, resolve=True), "dtype": cfg.runner.dtype,
                        "versions": declares["versions"], "batch_version": BATCH_VERSION})


def forward_tokens(probes: list, shared, model_cfg: dict) -> int:
    """Tokens one probe of a checkpoint runs forward: each distinct batch once (the compute budget of a live run).
    A batch that needs the loaded model to be built counts as the shared one."""
    batches = {id(shared): shared}
    ctx = Context(None, shared, model_cfg, "live")
    for p in probes:
        try:
            b = p.make_batch(ctx)
        except Exception:  # noqa: BLE001 - built from the model at probe time
            b = None
        if b is not None:
            batches[id(b)] = b
    return sum(len(b) * b.seq_len for b in batches.values())


def run(cfg: DictConfig) -> dict:
    schema.validate(cfg)  # every option, before a revision is listed or a checkpoint loaded
    devices.claim_one_per_job()  # before anything touches CUDA
    devices.target_device(cfg.runner.device)  # a device that does not exist: one line naming those that do
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    probe_cfg = OmegaConf.to_container(cfg.probe, resolve=True)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    if model_cfg.get("vocab_size"):
        check_vocab(data_cfg["vocab_lo"], data_cfg["vocab_hi"], model_cfg["vocab_size"], model_cfg["name"])
    full = revisions.select(cfg.model, cfg.revisions, revisions.available(cfg.model))
    grid = revisions.job_part(cfg.model, cfg.revisions, full)  # revisions.shard / revisions.only
    probes = build_probes(cfg.probe)
    shared = instantiate(cfg.data)
    schema.check_context(model_cfg, grid[0].name, probes, shared, probe_cfg)  # config.json, before any weights
    declares = declared(probes)
    probe_hash = reuse_key(cfg, declares)
    repo = model_cfg["repo"]
    folder = lambda name: store.revision_dir(cfg.paths.results_dir, cfg.experiment_name, model_cfg["name"], name)
    store.check_writable(folder(""))  # a read-only or full results folder: one line now, not after the probing
    # Reuse is decided before any download: by the commit a revision's branch points at (a local folder's
    # file fingerprint), known from the refs. The rest is prefetched; see the lock below for the race.
    ids = {r.name: checkpoints.checkpoint_id(cfg.model, r) for r in grid}
    done = {r.name for r in grid if store.reusable(folder(r.name), repo, None, probe_hash, commit=ids[r.name])}
    log.info("%s: %d revisions x %d probes (%s)%s", model_cfg["name"], len(grid), len(probes),
             ", ".join(p.name for p in probes), f"; {len(done)} already in the store" if done else "")

    # `config` is also instantiate()'s own first parameter, hence the partial.
    tracker = instantiate(cfg.logger, _partial_=True)(**tracker_args(cfg, grid, full))
    outputs = {}
    fetch = iter(checkpoints.Prefetcher(cfg.model, [r for r in grid if r.name not in done]))
    bar = progress.JobBar(model_cfg["name"], len(grid), done, enabled=cfg.runner.progress_bar)  # stderr
    try:
        for rev in bar.over(grid):
            out, res = folder(rev.name), None
            if rev.name in done:
                log.info("%s %s: reusing %s (not downloaded)", model_cfg["name"], rev.name, out)
                heads, summary = store.read(out)
            else:
                res = next(fetch)
                # Another job may be probing this revision now (a shard of the same sweep launched twice, a
                # requeued task): take turns, and reuse its result if it finished while we waited.
                with store.locked(out):
                    if store.reusable(out, repo, res.weights_hash, probe_hash, commit=res.commit):
                        log.info("%s %s: reusing %s", model_cfg["name"], rev.name, out)
                        heads, summary = store.read(out)
                    else:
                        heads, summary = probe_revision(cfg, model_cfg, res, probes, shared, probe_cfg, probe_hash)
                        summary.update(signals=declares["signals"], thresholds=declares["thresholds"])
                        summary["provenance"]["probe_versions"] = declares["versions"]
                        summary["provenance"]["duplicate_of"] = res.duplicate_of  # the Prefetcher warns once
                        store.write(out, heads, summary)
            if summary.get("status") == "failed":
                log.warning("%s %s: failed: %s; try %s (recorded in %s; the analysis leaves it out)",
                            model_cfg["name"], rev.name, summary["reason"], summary["suggestion"], out)
            else:
                tracker.log_revision(revision=rev.name, step=rev.step, tokens=rev.tokens, scalars=summary["scalars"],
                                     heads=heads, parquet_path=out / "heads.parquet",
                                     provenance=summary["provenance"])
            outputs[rev.name] = out
            if res is not None and not cfg.runner.keep_checkpoints:
                checkpoints.release(res)
        bar.close()
        model_dir = folder("")
        print(f"results: {model_dir}")
        # A job that probed part of a grid (a shard) sums up the model only when the whole grid is in the
        # store: the last shard to finish does it, or `python -m harness analyze` after the sweep.
        missing = [r.name for r in full if not store.complete(folder(r.name), repo, probe_hash)]
        if missing:
            print(f"summary: waiting for {len(missing)} of {len(full)} revisions from other jobs "
                  f"(e.g. {', '.join(missing[:3])}); the job that completes the grid plots and analyses it")
            print(f"W&B run: {tracker.url_or_path}")
            return outputs
        store.record_duplicates([folder(r.name) for r in full])  # across shards: weights equal to an earlier revision
        # Results reused from before the model had a family (or another one) get this config's labels.
        store.record_labels([folder(r.name) for r in full], family=model_cfg.get("family"), seed=model_cfg.get("seed"))
        findings = analyze(model_dir, cfg.analysis)
        if findings:
            plot = png.trajectory(model_dir, findings)  # the analysis has read the store once already
            if plot:
                print(f"plot:    {plot}")
            tracker.log_findings(findings, analysis.load_findings(model_dir)[1])
            print("\n".join(findings["summary"]))
            print(f"findings: {model_dir / 'findings.json'}")
            family(model_dir.parent, model_dir.name)
        print(f"W&B run: {tracker.url_or_path}")
        return outputs
    finally:
        bar.close()
        tracker.finish()


def tracker_args(cfg: DictConfig, grid: list, full: list) -> dict:
    """One run per job: the whole config, plus which revisions and shard this job probed, so that runs of a
    sharded sweep (one group per experiment) can be told apart and filtered in W&B."""
    config = OmegaConf.to_container(cfg, resolve=True)
    part = len(grid) < len(full)
    config["revision"] = grid[0].name if len(grid) == 1 else [r.name for r in grid]
    config["shard"] = cfg.revisions.get("shard")
    args = {"config": config}
    if part and cfg.logger.get("name"):
        tag = grid[0].name if len(grid) == 1 else f"shard{str(cfg.revisions.shard).replace('/', 'of')}"
        args["name"] = f"{cfg.logger.name}-{tag}"
    return args


def analyze(model_dir, rules_cfg, provisional: bool = False) -> dict | None:
    """The model's findings over every revision in the store (this job's and earlier ones')."""
    try:
        return analysis.analyze_model(model_dir, analysis.Rules.from_config(rules_cfg), provisional=provisional)
    except analysis.AnalysisError as e:  # e.g. a probe set without the screen: nothing to analyse
        log.info("no findings: %s", e)
        return None


def family(experiment_dir, model: str) -> None:
    """The model's family over the seeds analysed so far (the last job of a multirun over seeds sees them all)."""
    fam = families.family_of(experiment_dir, model)
    if fam:
        png.family(experiment_dir, fam)
        print(f"family:  {experiment_dir / families.FOLDER / families.file_name(fam['family'])} "
              f"({fam['n_seeds']} seeds)")


@dataclass(frozen=True)
class RevisionInfo:
    """A checkpoint as provenance records it: a hub revision, a saved folder, or a model in training."""
    name: str
    step: int | None
    tokens: int | None
    commit: str | None = None
    weights_hash: str | None = None
    stage: int | None = None
    ingredient: int | None = None


def probe_revision(cfg, model_cfg, res, probes, shared, probe_cfg, probe_hash):
    model = loader.load(res, cfg.runner.dtype, model_cfg["name"], devices.target_device(cfg.runner.device))
    try:
        return probe_model(model, res, cfg=cfg, model_cfg=model_cfg, probes=probes, shared=shared, probe_cfg=probe_cfg,
                           probe_hash=probe_hash, dtype=cfg.runner.dtype, device=cfg.runner.device)
    finally:
        del model
        gc.collect()


def probe_model(model, res, *, cfg, model_cfg, probes, shared, probe_cfg, probe_hash, dtype, device):
    """(heads, summary) of one loaded model: the probe loop, then the per-head frame and the summary with its
    provenance. `res`: the checkpoint (a Resolved revision or a RevisionInfo)."""
    layout = head_layout(model.config)
    check_vocab(shared.meta.get("vocab_lo", 0), shared.meta.get("vocab_hi", 1), text_config(model.config).vocab_size,
                model_cfg["name"])  # a multimodal wrapper nests it under text_config
    ctx = Context(layout, shared, model_cfg, res.name)
    groups = loop.group_by_batch(probes, shared, ctx)
    try:
        runner = SimpleNamespace(batch_size=cfg.runner.batch_size, device=device, dtype=dtype)
        results = loop.run_checkpoint(model, groups, model_cfg=model_cfg, revision=res.name, runner=runner)
        failure = {}
    except loop.NonFiniteError as e:  # e.g. fp16 overflow at an early checkpoint: record it, go on
        results = {}
        failure = {"status": "failed", "reason": str(e),
                   "suggestion": "runner.dtype=float32" if dtype != "float32" else
                   "check this checkpoint's weights for inf/NaN"}
    heads = store.heads_frame(results, layout.n_layers, layout.n_heads)
    summary = {
        **failure,
        "scalars": store.flat_scalars(results),
        "info": {f"{name}.{k}": v for name, r in results.items() for k, v in r.info.items()},
        "provenance": {
            "model": model_cfg["name"], "repo": model_cfg["repo"], "family": model_cfg.get("family"),
            "seed": model_cfg.get("seed"), "revision": res.name, "stage": res.stage,
            "ingredient": res.ingredient, "step": res.step, "tokens": res.tokens,
            "commit": res.commit, "weights_hash": res.weights_hash, "dtype": dtype, "device": str(device),
            "layout": vars(layout), "probe_config": probe_cfg, "data": shared.meta,
            "probe_hash": probe_hash, "packages": package_versions(), "created": now(),
        },
    }
    return heads, summary
