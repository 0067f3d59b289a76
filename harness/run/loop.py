"""The probe loop over one checkpoint, the same for a sweep and for a model in training.

The engine serves the union of the probes' needs; probes see each batch through Lightning-style hooks
(`on_checkpoint_start`, `on_batch`, `on_checkpoint_end`). A plain loop, not a Lightning Trainer: inside
someone's training job a nested Trainer would cast their model (its precision plugins) and take over the
process's loggers. Batches go to the model's device; an out-of-memory error halves the rows per forward pass
for the rest of the checkpoint.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import torch

from harness.capture.batches import ProbeBatch
from harness.capture.engine import Engine, Needs
from harness.capture.memory import auto_batch_size, dtype_nbytes
from harness.common.errors import HarnessError
from probes.base import Context, Probe, ProbeResult, Step

log = logging.getLogger("harness.run.loop")


class NonFiniteError(HarnessError, FloatingPointError):
    """A forward pass with inf/NaN attention or outputs: the revision is recorded as failed, the sweep goes on."""


class _Batches:
    """Runs the engine on each batch and hands the capture to every probe."""

    rows = None  # after an out-of-memory error: the most rows one forward pass may take

    def __init__(self, engine: Engine, needs: Needs, probes: list[Probe], ctx: Context):
        self.engine, self.needs, self.probes, self.ctx = engine, needs, probes, ctx
        self.device = next(engine.model.parameters()).device

    def run(self, ids: torch.Tensor, index: torch.Tensor, batch_idx: int) -> None:
        ids = ids.to(self.device)
        start = 0
        while start < len(ids):
            end = start + (self.rows or len(ids))
            try:
                cap = self.engine.run(ids[start:end], self.needs)
            except torch.OutOfMemoryError:
                if end - start == 1:
                    raise
                self.rows = (end - start) // 2  # and for the rest of this checkpoint: no retry per batch
                log.warning("out of memory on a batch of %d: continuing with batches of %d (runner.batch_size)",
                            end - start, self.rows)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            if not cap.finite:
                dtype = str(next(self.engine.model.parameters()).dtype).removeprefix("torch.")
                raise NonFiniteError(f"non-finite attention or outputs in batch {batch_idx} ({dtype})")
            step = Step(cap, index[start:end].numpy(), ids[start:end])
            for p in self.probes:
                p.on_batch(step, self.ctx)
            start = end


def group_by_batch(probes: list[Probe], shared: ProbeBatch, ctx: Context) -> list[tuple[ProbeBatch, list[Probe]]]:
    """Probes that share a batch share its forward passes."""
    groups: dict[int, tuple[ProbeBatch, list[Probe]]] = {}
    members = defaultdict(list)
    for p in probes:
        b = p.make_batch(ctx) or shared
        groups.setdefault(id(b), (b, members[id(b)]))
        members[id(b)].append(p)
    return list(groups.values())


def run_checkpoint(model, groups, *, model_cfg: dict, revision: str, runner) -> dict[str, ProbeResult]:
    """Every group's batch through the model, its probes fed batch by batch; `runner`: batch_size (or "auto"),
    device and dtype (for the automatic batch size)."""
    engine = Engine(model)
    results = {}
    for batch, probes in groups:
        ctx = Context(engine.layout, batch, model_cfg, revision, engine)
        needs = Needs()
        for p in probes:
            needs = needs | p.needs(batch)
            p.on_checkpoint_start(ctx)
        size = runner.batch_size
        if str(size) == "auto":  # memory grows linearly with T, so the batch can follow free memory
            size = min(len(batch), auto_batch_size(model, batch.seq_len, needs, runner.device, dtype_nbytes(runner.dtype)))
        loop = _Batches(engine, needs, probes, ctx)
        for i, start in enumerate(range(0, len(batch), int(size))):
            end = min(start + int(size), len(batch))
            loop.run(batch.input_ids[start:end], torch.arange(start, end), i)
        for p in probes:
            results[p.name] = p.on_checkpoint_end(ctx)
    return results
