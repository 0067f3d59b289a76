"""Probe a Lightning training run while it trains: one callback, the sweep's store, findings and W&B conventions.

    from harness.live.lightning import ProbeCallback
    trainer = L.Trainer(callbacks=[ProbeCallback(overrides=["model.batch.vocab_hi=50000"], schedule="log")])

The model probed is the LightningModule's Hugging Face model (the module itself or its outermost PreTrainedModel).
Global rank 0 probes at each due global step, right after the optimizer step (never while gradients accumulate);
the other ranks wait for it. The prober starts at the first training batch, whose shape gives the tokens per step
when they are not given; the initial weights are probed there as step 0.
"""
from __future__ import annotations

import lightning as L
import torch

from harness.live import ranks


class ProbeCallback(L.Callback):
    """Same arguments as harness.live.prober.LiveProber; `name` defaults to the trainer's logger name (when set)
    or the LightningModule's class name, `total_steps` to the trainer's planned optimizer steps."""

    def __init__(self, name: str | None = None, *, overrides=(), total_steps: int | None = None,
                 tokens_per_step: int | None = None, schedule="log", max_overhead: float | None = None,
                 wandb: str = "run", source: str = "live"):
        self.opts = ranks.options(name, overrides, total_steps, tokens_per_step, schedule, max_overhead, wandb, source)
        self.live: ranks.RankedProber | None = None
        self.model = None  # the Hugging Face model inside the LightningModule

    @property
    def prober(self):
        """This rank's LiveProber: rank 0's once training started, None on the other ranks."""
        return self.live.prober if self.live is not None else None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        sharded = _sharded(trainer.strategy)
        if sharded:
            ranks.refuse_sharded(sharded)
        ranks.hf_model(pl_module)  # nothing to probe: say so before training, not at the first due step
        ranks.check_schedule(self.opts, trainer.max_steps if trainer.max_steps > 0 else None)

    def on_train_start(self, trainer, pl_module) -> None:
        self.model = ranks.hf_model(pl_module)
        self.live = ranks.RankedProber(self.opts, rank0=trainer.is_global_zero, world=trainer.world_size,
                                       sync=lambda obj: trainer.strategy.broadcast(obj, src=0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.live.started:
            return
        step, per_step = trainer.global_step, None
        n = _batch_tokens(batch)
        if n:  # every rank takes a batch of this shape for each of the accumulated micro-batches
            per_step = n * trainer.accumulate_grad_batches * trainer.world_size
        self.live.start(name=_default_name(trainer, pl_module), total_steps=_planned_steps(trainer),
                        tokens_per_step=per_step, resumed_at=step)
        if step == 0:  # the initial weights: no optimizer step has run yet
            self.live.step(self.model, 0, provenance=self._provenance(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # global_step counts optimizer steps: unchanged while accumulating, so `step` acts once per new value.
        self.live.step(self.model, trainer.global_step, provenance=self._provenance(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.live is not None:
            self.live.finish(self.model, trainer.global_step)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.live is not None:
            self.live.close()

    @staticmethod
    def _provenance(trainer) -> dict:
        return {"trainer": "lightning", "world_size": trainer.world_size}


def _sharded(strategy) -> str | None:
    """The name of a strategy that shards parameters, else None (imports nothing the user does not have)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)):
        return f"strategy {type(strategy).__name__}"
    if isinstance(strategy, DeepSpeedStrategy):
        stage = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage")
        if stage == 3:
            return "DeepSpeed ZeRO stage 3"
    return None


def _planned_steps(trainer) -> int | None:
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    est = trainer.estimated_stepping_batches
    return int(est) if est != float("inf") else None


def _default_name(trainer, pl_module) -> str:
    logger_name = getattr(trainer.logger, "name", None) if trainer.logger is not None else None
    if logger_name and logger_name != "lightning_logs":  # Lightning's default name says nothing about the run
        return str(logger_name)
    return type(pl_module).__name__


def _batch_tokens(batch) -> int | None:
    """Tokens in one micro-batch: its input_ids (a dict's or the first tensor of a tuple), else None."""
    if isinstance(batch, dict) or hasattr(batch, "keys"):
        ids = batch.get("input_ids") if hasattr(batch, "get") else None
    elif isinstance(batch, (list, tuple)) and batch:
        ids = batch[0]
    else:
        ids = batch
    return int(ids.numel()) if isinstance(ids, torch.Tensor) and ids.dtype in (torch.long, torch.int) else None
