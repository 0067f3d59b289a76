"""Probe a zoo suite while it trains (harness.live's LiveProber): alerts printed as they happen, results stored as
`python -m harness experiment=zoo model=zoo-<suite>` stores them, so that sweep reuses them instead of probing again.

The probed steps are the live schedule (default `log`) snapped to the suite's checkpoint steps: each one is a
published revision, and its result names that revision's commit (the sweep's reuse rule: same repo, probe config
and commit). The probe runs after the checkpoint is published and before the training state is saved, so a build
killed mid-probe replays that step; a resumed or skipped build first probes, from the published revisions, the
scheduled steps it has no result for.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from harness.common.paths import CONF_DIR
from harness.live.schedule import ScheduleError, steps
from harness.results import store
from harness.sources import hubcache

ENABLED = ("auto", True, False)


def enabled(live: dict, smoke: bool) -> bool:
    """`live.enabled`: auto = on for real builds, off for smoke builds (tests: their own scratch results)."""
    if live.get("enabled") not in ENABLED:
        raise ValueError(f"live.enabled={live.get('enabled')}: must be auto, true or false")
    return (not smoke) if live["enabled"] == "auto" else bool(live["enabled"])


def snapped(live: dict, total: int, ckpts: list[int]) -> list[int]:
    """The live schedule over the recipe's steps, each step moved to the nearest checkpoint (the earlier one on a
    tie), plus the last step: only published revisions are probed."""
    spec = live.get("schedule", "log")
    planned = steps(list(spec) if isinstance(spec, (list, tuple)) else spec, total, n=int(live.get("n", 16)),
                    dense_n=int(live.get("dense_n", 8)))
    return sorted({min(ckpts, key=lambda c: (abs(c - s), c)) for s in planned if s <= total} | {total})


def overrides(suite: str, recipe: dict, live: dict, cache) -> list[str]:
    """The probe config of a suite: the sweep's (`experiment=<live.experiment> model=zoo-<suite>`) plus
    live.overrides."""
    return [f"model=zoo-{suite}", f"model.seed={recipe['seed']}", f"experiment={live.get('experiment', 'zoo')}",
            *([f"paths.hub_cache={cache}"] if cache else []), *live.get("overrides", [])]


def check(suite: str, recipe: dict, live: dict, cache) -> None:
    """Fail before any training when the suite cannot be probed live (one line, ValueError)."""
    if not (CONF_DIR / "model" / f"zoo-{suite}.yaml").is_file():
        raise ValueError(f"live probing: suite '{suite}' has no model preset conf/model/zoo-{suite}.yaml; "
                         "add one or set live.enabled=false")
    from harness.config.compose import compose
    from harness.config.schema import validate

    try:
        cfg = compose(overrides(suite, recipe, live, cache))
        validate(cfg)
        repo = cfg.model.repo
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors and the schema's: one line
        raise ValueError(f"live probing of {suite}: {str(e).splitlines()[0]} (live.overrides="
                         f"{list(live.get('overrides', []))})") from None
    if repo != recipe["repo"]:
        raise ValueError(f"live probing of {suite}: the build publishes {recipe['repo']} but model=zoo-{suite} "
                         f"probes {repo}; set live.enabled=false")
    try:
        snapped(live, recipe["steps"], [0, recipe["steps"]])
    except ScheduleError as e:
        raise ValueError(f"live.{e}") from None


class SuiteProber:
    """One suite's LiveProber, driven by the build at its checkpoints."""

    def __init__(self, suite: str, recipe: dict, live: dict, cache, ckpts: list[int], progress: bool = True):
        from harness.live.prober import LiveProber  # the probe stack, only in a build that probes

        self.repo, self.cache, self.progress = recipe["repo"], cache, progress
        self.steps = snapped(live, recipe["steps"], ckpts)
        self.prober = LiveProber(None, overrides=overrides(suite, recipe, live, cache), total_steps=recipe["steps"],
                                 schedule=self.steps)
        self.prober.alerts.echo = self.echo
        self.seconds = 0.0
        self.sweep = [f"experiment={live.get('experiment', 'zoo')}", f"model=zoo-{suite}",
                      *([f"model.seed={recipe['seed']}"] if recipe["seed"] else [])]

    def echo(self, line: str) -> None:
        """A line beside the progress bars (tqdm clears this process's bar, prints, redraws it); the escape
        clears what another build process's bar left on the line."""
        stream = sys.stderr if self.progress else sys.stdout
        tqdm.write(("\r\x1b[2K" if stream.isatty() else "") + line, file=stream)
        stream.flush()

    def at(self, model, step: int, commit: str) -> None:
        """After the checkpoint of `step` (the weights after `step` updates) is published as `commit`."""
        if step in self.steps:
            t0 = time.perf_counter()
            self.prober.observe(model, step, force=True, provenance={"commit": commit})
            self.seconds += time.perf_counter() - t0

    def has(self, step: int, commit: str) -> bool:
        """A result of this step's published weights that a sweep would reuse (not superseded)."""
        return store.reusable(self.prober.model_dir / f"step{step}", self.repo, None, self.prober.probe_hash,
                              commit=commit)

    def catch_up(self, upto: int) -> int:
        """Probe the scheduled steps <= `upto` that have no result for their published commit, loaded from the
        hub cache (an interrupted probe, a build resumed or skipped while live probing was off)."""
        from transformers import AutoModelForCausalLM

        from harness.live.prober import same_random_state

        done = 0
        for step in (s for s in self.steps if s <= upto):
            snap = hubcache.resolve(self.repo, f"step{step}", self.cache)
            if snap is None or self.has(step, snap.name):
                continue
            with same_random_state():  # loading must not move the build's generators
                model = AutoModelForCausalLM.from_pretrained(snap).train()
                self.at(model, step, snap.name)
            done += 1
        return done

    def resume(self, start: int) -> None:
        """The build resumed from its state at `start`."""
        self.prober.resume(start)
        self.catch_up(start)

    def finish(self, final: bool) -> dict:
        """Final findings (and the trajectory plot) after the last step, else close with provisional findings."""
        findings = None
        self.prober.alerts.path.touch()  # there even when nothing was alerted: this build probed live
        try:
            if final:
                findings = self.prober.finish()
        finally:
            self.prober.close()
        plot = self.prober.plot
        self.stale()
        return dict(probes=len(self.prober.probed), seconds=self.seconds, steps=self.steps,
                    results=str(self.prober.model_dir), status=findings.get("status") if findings else None,
                    summary=findings.get("summary", []) if findings else [], plot=plot and str(plot),
                    wandb=getattr(self.prober.tracker, "url_or_path", None))

    def finish_built(self, upto: int, final: bool) -> dict:
        """A build that was skipped (already built this far): probe what is missing; findings only if needed."""
        probed = self.catch_up(upto)
        path = self.prober.model_dir / "findings.json"
        status = json.loads(path.read_text()).get("status") if path.is_file() else None
        if probed or (final and status != "final"):
            return self.finish(final)
        self.prober.close()
        return dict(probes=0, seconds=0.0, steps=self.steps, results=str(self.prober.model_dir), status=status,
                    summary=[], plot=None, wandb=None)

    def close(self) -> None:
        """On an exception: close what the prober opened (its W&B run); the results stay."""
        self.prober.close()

    def stale(self) -> None:
        """Say so when the store holds results of weights this cache no longer publishes (an earlier recipe):
        the analysis reads every result of the model folder."""
        other = []
        for f in sorted(Path(self.prober.model_dir).glob("*/summary.json")):
            prov = (store.summary(f.parent) or {}).get("provenance", {})
            snap = hubcache.resolve(self.repo, prov.get("revision", f.parent.name), self.cache)
            if not prov.get("superseded") and (snap is None or snap.name != prov.get("commit")):
                other.append(f.parent.name)
        if other:
            self.echo(f"{self.prober.name}: {len(other)} result(s) in {self.prober.model_dir} are of weights this "
                      f"cache no longer holds (e.g. {', '.join(other[:3])}), and the analysis reads them: probe "
                      f"them again with python -m harness {' '.join(self.sweep)} or delete them")
