"""The probe plug-in API.

A probe declares what it needs from each forward pass (`needs`), accumulates over batches
(`on_batch`) and returns per-head arrays (layer x head) plus scalars (`on_checkpoint_end`).
A new probe is one file here plus one yaml in conf/probe/; the harness never names probes.

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
        """(B,) bool: this batch's rows whose induction/duplicate targets count (METHOD.md section 2)."""
        return ctx.batch.valid[self.index]


@dataclass
class ProbeResult:
    heads: dict[str, np.ndarray]  # metric -> (L, H) array (numeric, bool or str)
    scalars: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # JSON-able extras (e.g. circuit head lists)


class Probe:
    """Base class. Subclasses set `columns` (metric names, documentation for `harness ls probes`)."""

    columns: tuple[str, ...] = ()
    needs_logits = False

    def __init__(self, name: str | None = None):
        self.name = name or type(self).__name__.lower()

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


def circuit_names(mask: np.ndarray) -> list[str]:
    """Boolean (L, H) -> ["L4H4", ...]."""
    return [f"L{layer}H{head}" for layer, head in zip(*np.nonzero(mask))]
