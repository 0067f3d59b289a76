"""The probe plug-in API.

A probe declares what it needs from each forward pass (`needs`), accumulates over batches
(`on_batch`) and returns per-head arrays (layer x head) plus scalars (`on_checkpoint_end`).
A new probe is one file here plus one yaml in conf/probe/; the harness never names probes. The yaml's key is the
probe's name (its column prefix in the store); `probe=all` selects every such file.

Lifecycle per checkpoint: on_checkpoint_start(ctx) -> on_batch(step) for every batch ->
on_checkpoint_end(ctx) -> ProbeResult. Probes by default read the shared batch (conf/data);
one that needs its own (e.g. [BOS] + R + R) overrides `make_batch`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.capture.arch import HeadLayout
from harness.capture.batches import ProbeBatch
from harness.capture.engine import Capture, Needs


@dataclass
class Context:
    """What a probe may know about the checkpoint being probed."""

    layout: HeadLayout
    batch: ProbeBatch
    model_cfg: dict  # the composed model config (name, repo, bos_id, vocab_size, ...)
    revision: str = ""
    engine: object = None  # harness.capture.engine.Engine, for probes that run extra forward passes


@dataclass
class Step:
    """One batch: the capture plus which examples of the ProbeBatch it covers."""

    capture: Capture
    index: np.ndarray  # example indices into ctx.batch
    input_ids: object  # the (B, T) tensor on the model's device

    def pos(self, ctx: Context, name: str) -> np.ndarray:
        return ctx.batch.positions[name][self.index]

    def valid(self, ctx: Context) -> np.ndarray:
        """(B,) bool: this batch's rows whose induction/duplicate targets count (docs/method.md section 2)."""
        return ctx.batch.valid[self.index]


@dataclass
class ProbeResult:
    heads: dict[str, np.ndarray]  # metric -> (L, H) array (numeric, bool or str)
    scalars: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # JSON-able extras (e.g. circuit head lists)


class Probe:
    """Base class. A subclass sets:

    - `columns`: its per-head metric names (documentation, shown by `python -m harness ls probes`);
    - `version`: bump it whenever a change to the code changes the probe's numbers: stored results of another
      version are recomputed, never reused;
    - `signals` (optional): which of its metrics (per-head or scalar) play a standard role that the findings and
      reports read, e.g. {"induction": "induction"} says that this probe's `induction` column is the induction
      selectivity (roles: induction, first_token, previous_token, pr; scalars bos_fraction, n_induction,
      induction_max);
    - `thresholds()` (optional): the head-class thresholds it applies, recorded with every result so that the
      findings and reports classify heads exactly as the probe did.

    The harness sets `name` from the probe's yaml key; constructed directly, a probe is named after its class.
    """

    columns: tuple[str, ...] = ()
    version: int = 1
    signals: dict[str, str] = {}
    needs_logits = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()

    def thresholds(self) -> dict[str, float]:
        return {}

    def make_batch(self, ctx: Context) -> ProbeBatch | None:
        """Return a batch of its own, or None to use the shared one."""
        return None

    def needs(self, batch: ProbeBatch) -> Needs:
        raise NotImplementedError

    def on_checkpoint_start(self, ctx: Context) -> None:
        pass

    def on_batch(self, step: Step, ctx: Context) -> None:
        raise NotImplementedError

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        raise NotImplementedError


def ratio_of_means(mean_target, mean_baseline, eps: float):
    """Selectivity as the study defines it: mean attention to a target / mean attention to the baseline
    positions (means over examples), the baseline floored at eps (docs/method.md section 3)."""
    return mean_target / np.maximum(mean_baseline, eps)

