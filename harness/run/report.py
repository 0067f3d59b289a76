"""The experiment's reports from a composed config: `python -m harness report` and `harness.api.report` call it.

Writes <paths.results_dir>/<experiment_name>/report.html (every model of the experiment, analysed first where its
findings are missing or older than its results; the families of seeds among them side by side, their findings in
families/<family>.json and .png) and the W&B report: saved when W&B is online, else
<paths.results_dir>/<experiment_name>/wandb_report.json.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def write_report(cfg: DictConfig) -> Path:
    """report.html and the W&B report of `cfg.experiment_name` (`cfg.models`: the model folders, null = all);
    prints where they are and returns the page."""
    from harness.analysis import Rules, analyze_families
    from harness.config import schema
    from harness.report import png, wandb_report
    from harness.report.collect import collect
    from harness.report.html import build_html
    from harness.tracking.tracker import wandb_mode

    schema.validate_store_args(cfg)
    models = collect(cfg.paths.results_dir, cfg.experiment_name, cfg.get("models"), Rules.from_config(cfg.analysis))
    out_dir = Path(cfg.paths.results_dir) / cfg.experiment_name
    findings = {name: f for name, (f, _) in models.items()}
    families = analyze_families(out_dir, findings)  # the models of the report that are seeds of one family
    for fam in families.values():
        png.family(out_dir, fam)
    page = out_dir / "report.html"
    page.write_text(build_html(models, f"circuit-trajectories: {cfg.experiment_name}", families), encoding="utf-8")
    print(f"report: {page}")
    if families:
        seeds = ", ".join(f"{k} ({v['n_seeds']} seeds)" for k, v in families.items())
        print(f"families: {seeds} -> {out_dir / 'families'}")
    logger = cfg.get("logger") or {}
    where = wandb_report.publish(findings, cfg.experiment_name, out_dir / "wandb_report.json",
                                 project=logger.get("project", "circuit-trajectories"), entity=logger.get("entity"),
                                 mode=wandb_mode(logger.get("mode", "auto")), families=families)
    print(f"W&B report: {where}")
    return page
