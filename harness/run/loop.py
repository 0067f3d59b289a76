"""The Lightning-style inference loop over one checkpoint.

Lightning does device placement and precision; the engine serves the union of the probes' needs; probes see
each batch through `on_batch`. The job shows one progress bar over its revisions (harness.run.progress), so
Lightning's own per-revision bar is off, and its info lines and warnings are quieted only while a checkpoint
runs (`quiet_lightning`): importing this module changes nothing in the user's process.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections import defaultdict

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from harness.capture.batches import ProbeBatch
from harness.capture.engine import Engine, Needs
from harness.capture.memory import auto_batch_size, dtype_nbytes
from harness.common.errors import HarnessError
from probes.base import Context, Probe, ProbeResult, Step

log = logging.getLogger("harness.run.loop")
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
# Probes accumulate state instead of returning predictions, and the batches live in memory.
QUIET_WARNINGS = (".*predict returned None.*", ".*does not have many workers.*", ".*isinstance.treespec, LeafSpec.*")


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's info lines (GPU available, ...) and the warnings above off while a checkpoint runs; the
    loggers' levels and the warning filters are restored afterwards."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            for lg in loggers:
                lg.setLevel(logging.WARNING)
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class NonFiniteError(HarnessError, FloatingPointError):
    """A forward pass with inf/NaN attention or outputs: the revision is recorded as failed, the sweep goes on."""


PRECISION = {"float32": "32-true", "bfloat16": "bf16-true", "float16": "16-true"}


class _Examples(Dataset):
    def __init__(self, batch: ProbeBatch):
        self.ids = batch.input_ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "index": i}


class ProbeModule(L.LightningModule):
    """Runs the engine on each batch and hands the capture to every probe."""

    def __init__(self, engine: Engine, needs: Needs, probes: list[Probe], ctx: Context):
        super().__init__()
        self.model = engine.model  # a submodule, so Lightning places it on the device
        self.engine, self.needs, self.probes, self.ctx = engine, needs, probes, ctx

    rows = None  # after an out-of-memory error: the most rows one forward pass may take

    def predict_step(self, batch, batch_idx):
        ids, index = batch["input_ids"], batch["index"]
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
                dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
                raise NonFiniteError(f"non-finite attention or outputs in batch {batch_idx} ({dtype})")
            step = Step(cap, index[start:end].cpu().numpy(), ids[start:end])
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
    with quiet_lightning():
        return _run_checkpoint(model, groups, model_cfg=model_cfg, revision=revision, runner=runner)


def _run_checkpoint(model, groups, *, model_cfg: dict, revision: str, runner) -> dict[str, ProbeResult]:
    engine = Engine(model)
    accelerator, devices = str(runner.device), 1
    if accelerator.startswith("cuda:"):  # torch's name for one GPU; Lightning takes an index list
        accelerator, devices = "cuda", [int(accelerator.split(":")[1])]
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, precision=PRECISION[runner.dtype],
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False,  # one bar per job, over its revisions (harness.run.progress)
    )
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
        loader = DataLoader(_Examples(batch), batch_size=int(size), shuffle=False)
        trainer.predict(ProbeModule(engine, needs, probes, ctx), dataloaders=loader, return_predictions=False)
        for p in probes:
            results[p.name] = p.on_checkpoint_end(ctx)
    return results

