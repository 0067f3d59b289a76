"""Probe a model while it trains: the sweep's probes, result store, findings and W&B conventions, at scheduled steps.

    prober = LiveProber("my-run", overrides=["probe=default", "model.batch.vocab_hi=32000"], total_steps=10_000)
    for step in ...:                       # after the optimizer step
        train_step()
        prober.observe(model, step)        # probes only when the schedule says so
    prober.finish(model, step)             # the last step, final findings, the W&B run closed

`observe` probes the model in place and leaves training as it found it: no gradients (`torch.no_grad`, not
inference mode, whose tensors would break the next backward), eval mode and the capture attention only while
it probes, then the model's train mode, attention implementation and every random generator restored, so a
seeded run ends with the same weights with or without it. Each probe is stored as a sweep stores a revision,
`<results>/<experiment>/<name>/step<N>` (provenance `source: live`), the findings are recomputed over the
stored steps (provisional until `finish`), and alerts go out once each (harness.live.alerts).
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from harness.common import files
from harness.common.heads import head_name
from harness.config import schema
from harness.config.compose import compose
from harness.live.alerts import Alerts
from harness.live.schedule import Schedule
from harness.results import store
from harness.run import job

log = logging.getLogger("harness.live")
STATE = "live.json"  # beside the results: the W&B run id, so that a resumed training resumes the same run
WANDB_MODES = ("run", "trainer", "off")


@contextlib.contextmanager
def same_random_state(model=None):
    """Python's, NumPy's and torch's generators (CPU, and the CUDA devices `model` is on) as they were."""
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}) if model else []
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def untouched(model):
    """Probe a model in training without changing it: gradients off, eval mode, then train mode, the attention
    implementation and the random generators as they were."""
    training, impl = model.training, model.config._attn_implementation
    with same_random_state(model), torch.no_grad():
        model.eval()
        try:
            yield
        finally:
            if model.config._attn_implementation != impl:
                model.set_attn_implementation(impl)
            model.train(training)


def _device_dtype(model) -> tuple[str, str]:
    p = next(model.parameters())
    return str(p.device), str(p.dtype).removeprefix("torch.")


class LiveProber:
    """The live core; the Lightning and Hugging Face callbacks and the watch mode drive it."""

    def __init__(self, name: str | None = None, *, overrides: Sequence[str] = (), total_steps: int | None = None,
                 tokens_per_step: int | None = None, schedule="log", max_overhead: float | None = None,
                 wandb: str = "run", source: str = "live", stable_k: int = 3):
        if wandb not in WANDB_MODES:
            raise schema.ConfigError(f"wandb={wandb}: must be one of {', '.join(WANDB_MODES)}")
        overrides = list(overrides)
        keys = {o.lstrip("+~").split("=")[0] for o in overrides}
        if "model" not in keys:
            overrides.insert(0, "model=local")
        if name is not None:
            overrides.append(f"model.name={name}")
        if "model.repo" not in keys and "model" not in keys:
            overrides.append(f"model.repo=live:{name or 'run'}")
        self.cfg = cfg = compose(overrides)
        schema.validate(cfg)
        self.model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        self.probe_cfg = OmegaConf.to_container(cfg.probe, resolve=True)
        self.name, self.source, self.wandb = self.model_cfg["name"], source, wandb
        self.probes = job.build_probes(cfg.probe)
        self.shared = instantiate(cfg.data)
        self.declares = job.declared(self.probes)
        self.probe_hash = job.reuse_key(cfg, self.declares)
        self.model_dir = store.revision_dir(cfg.paths.results_dir, cfg.experiment_name, self.name, "")
        store.check_writable(self.model_dir)
        self.tokens_per_step = tokens_per_step or self.model_cfg.get("tokens_per_step")
        self.total_steps = total_steps
        cost = job.forward_tokens(self.probes, self.shared, self.model_cfg)
        self.schedule = Schedule(schedule, total_steps, max_overhead, probe_tokens=cost)
        self.alerts = Alerts(self.model_dir, self.name, total_steps=total_steps, stable_k=stable_k)
        self.tracker = None
        self.probed: list[int] = []  # steps probed by this process
        self.plot = None  # the trajectory plot, once training ended
        self.closed = False

    # ------------------------------------------------------------------ schedule

    def due(self, step: int) -> bool:
        """Whether `step` is a scheduled step (the same answer on every rank)."""
        return self.schedule.due(step)

    def tokens(self, step: int) -> int | None:
        return step * self.tokens_per_step if self.tokens_per_step else None

    # ------------------------------------------------------------------ probing

    def observe(self, model, step: int, tokens: int | None = None, *, force: bool = False,
                provenance: dict | None = None) -> dict | None:
        """Probe `model` at `step` if the schedule (or `force`) says so; returns the stored summary, else None."""
        if self.closed:
            raise RuntimeError("this LiveProber is finished")
        if not (force or self.due(step)):
            return None
        tokens = tokens if tokens is not None else self.tokens(step)
        if not force and not self.schedule.affordable(step, tokens):
            log.info("%s: step %d skipped: probing would exceed max_overhead=%s of training compute (%.3g so far)",
                     self.name, step, self.schedule.max_overhead, self.schedule.overhead(tokens) or 0)
            return None
        name = f"step{step}"
        device, dtype = _device_dtype(model)
        rev = job.RevisionInfo(name=name, step=step, tokens=tokens, commit=(provenance or {}).get("commit"),
                               weights_hash=(provenance or {}).get("weights_hash"))
        t0 = time.perf_counter()
        with untouched(model):
            heads, summary = job.probe_model(model, rev, cfg=self.cfg, model_cfg=self.model_cfg, probes=self.probes,
                                             shared=self.shared, probe_cfg=self.probe_cfg, probe_hash=self.probe_hash,
                                             dtype=dtype, device=device)
        self.schedule.spend()
        summary.update(signals=self.declares["signals"], thresholds=self.declares["thresholds"])
        prov = summary["provenance"]
        prov.update({"probe_versions": self.declares["versions"], "source": self.source,
                     "overhead": self.schedule.overhead(tokens)}, **(provenance or {}))
        out = self.model_dir / name
        store.write(out, heads, summary)
        self.probed.append(step)
        # Beside training (watch mode) the probe costs no training compute: no share to report.
        over = self.schedule.overhead(tokens) if self.source == "live" else None
        log.info("%s: step %d probed in %.1f s%s", self.name, step, time.perf_counter() - t0,
                 f"; probe compute so far {100 * over:.2f}% of training's" if over is not None else "")
        if summary.get("status") == "failed":
            self.alerts.failed(name, summary["reason"], summary["suggestion"], step, tokens)
        else:
            self._track().log_revision(revision=name, step=step, tokens=tokens, scalars=summary["scalars"], heads=heads,
                                       parquet_path=out / "heads.parquet", provenance=prov)
            self._findings(final=False, step=step, tokens=tokens)
        return summary

    def _findings(self, *, final: bool, step=None, tokens=None) -> dict | None:
        findings = job.analyze(self.model_dir, self.cfg.analysis, provisional=not final)
        if findings is None:
            return None
        self.alerts.check(findings, _circuit_heads(self.model_dir, findings), step, tokens)
        return findings

    def resume(self, step: int) -> list[str]:
        """Training resumed from `step`: results stored above it by the crashed attempt are superseded (left out
        of the analysis) until training reaches those steps again and replaces them."""
        gone = store.mark_superseded(self.model_dir, step)
        if gone:
            log.info("%s: resumed at step %d; superseded %d later result(s): %s", self.name, step, len(gone),
                     ", ".join(gone[:5]))
        return gone

    def finish(self, model=None, step: int | None = None, tokens: int | None = None) -> dict | None:
        """Training ended: probe the last step if it is not stored yet, final findings, W&B run closed."""
        if self.closed:
            return None
        try:
            if model is not None and step is not None and step not in self.probed:
                stored = store.summary(self.model_dir / f"step{step}")
                if stored is None or stored["provenance"].get("superseded"):
                    self.observe(model, step, tokens, force=True)
            findings = self._findings(final=True)
            if findings is not None:
                from harness import analysis
                from harness.report import png

                self._track().log_findings(findings, analysis.load_findings(self.model_dir)[1])
                self.plot = png.trajectory(self.model_dir, findings)  # as a sweep plots its model
                log.info("%s: findings in %s", self.name, self.model_dir / "findings.json")
            return findings
        finally:
            self.close()

    def close(self) -> None:
        """Close what this prober opened (its W&B run); idempotent, for exception paths."""
        if self.closed:
            return
        self.closed = True
        if self.tracker is not None:
            self.tracker.finish()

    # ------------------------------------------------------------------ W&B

    def _track(self):
        if self.tracker is None:
            self.tracker = self._open_tracker()
            run = getattr(self.tracker, "run", None)
            if run is not None and self.wandb == "run":
                self.alerts.runs.append(run)
        return self.tracker

    def _open_tracker(self):
        from harness.tracking.tracker import NullTracker, TrainerRunTracker

        if self.wandb == "off" or self.cfg.logger.get("_target_", "").endswith("NullTracker"):
            return NullTracker()
        if self.wandb == "trainer":
            return TrainerRunTracker(prefix=f"circuits/{self.name}/")
        state = self.model_dir / STATE
        saved = json.loads(state.read_text()) if state.is_file() else {}
        config = OmegaConf.to_container(self.cfg, resolve=True) | {"live": {"total_steps": self.total_steps,
                                                                            "schedule": str(self.schedule.spec)}}
        tracker = instantiate(self.cfg.logger, _partial_=True)(config=config, job_type="live", reinit="create_new",
                                                              run_id=saved.get("wandb_run_id"))
        run_id = getattr(getattr(tracker, "run", None), "id", None)
        if run_id and run_id != saved.get("wandb_run_id"):
            files.write_text(state, json.dumps({**saved, "wandb_run_id": run_id}))
        return tracker


def _circuit_heads(model_dir: Path, findings: dict) -> dict[str, list[tuple[str, float]]]:
    """Each analysed revision's induction-circuit heads with their selectivities (from trajectory.parquet)."""
    import pandas as pd

    df = pd.read_parquet(model_dir / "trajectory.parquet")
    ind = findings["signals"]["induction"]
    out = {}
    for rev in findings["revisions"]:
        rows = df[(df["revision"] == rev) & df["is_induction"]].sort_values(ind, ascending=False)
        out[rev] = [(head_name(int(lay), int(h)), float(v)) for lay, h, v in zip(rows["layer"], rows["head"], rows[ind])]
    return out
