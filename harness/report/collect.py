"""The report's input: every model folder's findings, (re)analysed first where missing or out of date."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from harness.analysis import AnalysisError, Rules, analyze_experiment, load_findings, model_dirs
from harness.common.errors import HarnessError

log = logging.getLogger("harness.report")


def stale(model_dir: Path, rules: Rules) -> bool:
    """Findings missing, older than the newest revision result, or computed under other thresholds."""
    findings, traj = model_dir / "findings.json", model_dir / "trajectory.parquet"
    if not findings.is_file() or not traj.is_file():
        return True
    newest = max((p.stat().st_mtime_ns for p in model_dir.glob("*/summary.json")), default=0)
    if min(findings.stat().st_mtime_ns, traj.stat().st_mtime_ns) < newest:
        return True
    try:
        return json.loads(findings.read_text()).get("rules") != rules.as_dict()
    except ValueError:  # a half-written or foreign file: recompute it
        return True


def collect(results_dir, experiment: str, models=None, rules: Rules = Rules()) -> dict[str, tuple]:
    """model name -> (findings, trajectory). A model that cannot be analysed is left out with a warning;
    none at all is an error. No model folder: the analysis' one-line error (naming the experiments there)."""
    dirs = model_dirs(results_dir, experiment, list(models) if models else None)
    failed = {}
    for d in dirs:
        if stale(d, rules):
            try:
                analyze_experiment(results_dir, experiment, [d.name], rules)
            except AnalysisError as e:  # e.g. a model probed without the selectivity screen
                failed[d.name] = str(e)
                log.warning("report: leaving out %s: %s", d.name, e)
    out = {d.name: load_findings(d) for d in dirs if d.name not in failed}
    if not out:
        raise HarnessError(f"no model of {Path(results_dir) / experiment} could be analysed: "
                           + "; ".join(failed.values()))
    return out
