"""The same comparison as a W&B report, as code (wandb-workspaces).

Built whenever the report runs; saved (URL returned) only when W&B is online. It is also written as JSON in
the library's own serialisation, the view spec that `save()` uploads, so that offline runs and tests can
inspect its panels (`wr.Report._from_model(internal.ReportViewspec.model_validate(json))` reads it back).

wandb-workspaces is imported lazily: without it the HTML report is still written and this part is skipped.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from harness.analysis import run_findings
from harness.analysis.headline import SERIES, label
from harness.report import tables

log = logging.getLogger("harness.report")



def history(models: dict[str, dict]) -> list[tuple[str, str, bool]]:
    """(history key of each run, panel title, log y): the per-revision scalars every job logs against `tokens`,
    under the names the probes declared for the headline series."""
    first = next(iter(models.values()), {})
    signals = first.get("signals", {})
    return [(signals[key], label(key, first), log_y) for key, _, log_y in SERIES if key in signals]


def available() -> bool:
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        return False
    return True


def build(models: dict[str, dict], experiment: str, *, project: str, entity: str = "", online: bool = False,
          families: dict[str, dict] | None = None):
    """A `wr.Report` over the runs of W&B group `experiment`; `models`: name -> findings; `families`: family ->
    its findings over its seeds (`harness.analysis.analyze_families`), shown side by side where there are any.

    Offline the run sets name no entity/project: wandb-workspaces resolves a named project's id on the server
    while serialising, so only the online build names them.
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    if online and not entity:  # the API key's default entity, as wandb.init uses it
        import wandb
        entity = wandb.Api().default_entity

    def runset():
        where = {"entity": entity, "project": project} if online else {}
        return wr.Runset(name=f"group {experiment}", filters=[expr.Metric("Group") == experiment], **where)

    lines = [wr.LinePlot(title=title, x="tokens", y=[key], log_x=True, log_y=log_y, title_x="training tokens",
                         layout=wr.Layout(w=8, h=8)) for key, title, log_y in history(models)]
    seeds = []
    if families:  # the same band as the HTML page: runs grouped by their config's model.family, median, min-max
        bands = [wr.LinePlot(title=f"{title}: median and range over seeds", x="tokens", y=[key], log_x=True,
                             log_y=log_y, title_x="training tokens", groupby=wr.Config("model.family"),
                             groupby_aggfunc="median", groupby_rangefunc="minmax", layout=wr.Layout(w=8, h=8))
                 for key, title, log_y in history(models)]
        seeds = [wr.H2(text="Seeds side by side"),
                 wr.MarkdownBlock(text=tables.markdown(*tables.family_table(families))),
                 wr.PanelGrid(runsets=[runset()], panels=bands)]
    summary = "\n".join(f"- {s}" for f in models.values() for s in f.get("summary", []))
    blocks = [
        wr.P(text=f"Experiment {experiment}: {', '.join(models)}. One run per model (W&B group {experiment})."),
        wr.H2(text="Findings in words"),
        wr.MarkdownBlock(text=summary or "(no findings)"),
        wr.MarkdownBlock(text=tables.markdown(*tables.verdict_table(models))),
        wr.H2(text="Trajectories against training tokens"),
        wr.PanelGrid(runsets=[runset()], panels=lines),
        wr.H2(text="Milestones and lags"),
        wr.MarkdownBlock(text=tables.markdown(*tables.milestone_table(models))),
        *seeds,
        wr.H2(text="BOS-classified heads per layer (F1)"),
        wr.PanelGrid(runsets=[runset()], panels=[
            wr.MediaBrowser(title="BOS heads per layer x revision", media_keys=[run_findings.BOS_LAYERS],
                            layout=wr.Layout(w=12, h=10)),
            wr.WeavePanelSummaryTable(table_name=run_findings.TABLE, layout=wr.Layout(w=12, h=10))]),
    ]
    for name, f in models.items():  # the same counts as text: readable without the images
        blocks += [wr.H3(text=name), wr.MarkdownBlock(text=tables.markdown(*tables.layer_table(f)))]
    return wr.Report(project=project, entity=entity, title=f"circuit-trajectories: {experiment}"[:128],
                     description="When do attention circuits form? Findings per model, docs/method.md section 4.",
                     blocks=blocks)


def spec(report) -> dict:
    """The report as the JSON view spec that `save()` uploads (no network when run sets name no project)."""
    return report._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def publish(models: dict[str, dict], experiment: str, out: Path, *, project: str, entity: str | None,
            mode: str, families: dict[str, dict] | None = None) -> str:
    """Write `out` (the spec, built offline) and, when `mode` (harness.tracking.tracker.wandb_mode) is "online", save the
    report; returns a line saying where it is."""
    if not available():
        return "not built (wandb-workspaces is not installed: pip install wandb-workspaces)"
    out.write_text(json.dumps(spec(build(models, experiment, project=project, entity=entity or "", families=families)),
                              indent=1))
    if mode != "online":
        why = "W&B disabled: not saved" if mode == "disabled" else "offline: saved when W&B is online"
        return f"{out} ({why})"
    try:
        report = build(models, experiment, project=project, entity=entity or "", online=True, families=families)
        return report.save().url
    except Exception as e:  # the HTML report and the JSON are written; a failed upload is not fatal
        log.warning("W&B report not saved (%s: %s)", type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        return f"{out} (saving failed; see the warning above)"
