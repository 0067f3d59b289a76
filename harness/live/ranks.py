"""What the Lightning and Hugging Face callbacks share: one LiveProber on global rank 0, the schedule on every rank.

The schedule is a function of the step alone, so every rank knows the due steps without talking. At a due step
rank 0 probes while the others wait for its outcome: one broadcast from rank 0 is the barrier, and it carries
rank 0's error, if any, so that every rank stops with it instead of the others hanging in the next collective.
Sharded models (FSDP, DeepSpeed ZeRO-3) are refused: no rank holds the whole model to probe.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from harness.common.errors import HarnessError
from harness.live.schedule import Schedule

log = logging.getLogger("harness.live")

WATCH_HINT = ("save checkpoints and run `python -m harness watch model=local model.repo=<checkpoint folder>` "
              "beside the training instead")


class ShardedModelError(HarnessError, RuntimeError):
    """A sharded strategy: no rank holds the whole model."""


class NoModelError(HarnessError, TypeError):
    """Nothing to probe: no Hugging Face model in the training module."""


class RankFailedError(HarnessError, RuntimeError):
    """Rank 0's probe failed: the other ranks stop with it."""


def refuse_sharded(what: str) -> None:
    raise ShardedModelError(f"{what} shards the model across ranks, which live probing cannot read; {WATCH_HINT}")


def hf_model(module):
    """The transformers model to probe: `module` itself or the outermost PreTrainedModel inside it."""
    from transformers import PreTrainedModel

    for m in module.modules():  # depth first from the module itself: the outermost comes first
        if isinstance(m, PreTrainedModel):
            return m
    raise NoModelError(f"{type(module).__name__} holds no transformers PreTrainedModel to probe (live probing reads "
                       "a Hugging Face causal LM: make it an attribute of the module)")


def options(name, overrides, total_steps, tokens_per_step, schedule, max_overhead, wandb, source) -> dict:
    """The constructor arguments both callbacks take: LiveProber's."""
    return dict(name=name, overrides=list(overrides), total_steps=total_steps, tokens_per_step=tokens_per_step,
                schedule=list(schedule) if isinstance(schedule, (list, tuple)) else schedule,
                max_overhead=max_overhead, wandb=wandb, source=source)


def check_schedule(opts: dict, total_steps: int | None) -> None:
    """A bad schedule or budget fails at set-up, on every rank alike, before training starts."""
    Schedule(opts["schedule"], opts["total_steps"] or total_steps, opts["max_overhead"])


class RankedProber:
    """Drives a LiveProber from inside a training loop of `world` processes.

    `sync(obj)` is a broadcast from rank 0 (its value returned on every rank); in one process it returns obj.
    """

    def __init__(self, opts: dict, *, rank0: bool, world: int, sync: Callable[[object], object]):
        self.opts, self.rank0, self.world, self.sync = opts, rank0, world, sync
        self.prober = None
        self.schedule = None
        self.last = None  # the last global step handled: once per step, never again after a resume
        self.steps_waited: list[int] = []  # due steps this rank synchronised at

    @property
    def started(self) -> bool:
        return self.schedule is not None

    def start(self, *, name: str, total_steps: int | None, tokens_per_step: int | None, resumed_at: int) -> None:
        total = self.opts["total_steps"] or total_steps
        self.schedule = Schedule(self.opts["schedule"], total, self.opts["max_overhead"])
        self.last = resumed_at if resumed_at > 0 else None

        def create():
            from harness.live.prober import LiveProber  # composes the config: only where it probes

            kw = {**self.opts, "name": self.opts["name"] or name, "total_steps": total,
                  "tokens_per_step": self.opts["tokens_per_step"] or tokens_per_step}
            self.prober = LiveProber(**kw)
            if resumed_at > 0:
                self.prober.resume(resumed_at)

        self._on_rank0(create, "start")

    def step(self, model, step: int, tokens: int | None = None, provenance: dict | None = None) -> None:
        """After an optimizer step (or before the first, step 0): probe on rank 0 when due, the others wait."""
        if step == self.last:
            return
        self.last = step
        if self.schedule.due(step):
            self.steps_waited.append(step)
            self._on_rank0(lambda: self.prober.observe(model, step, tokens, provenance=provenance), f"step {step}")

    def finish(self, model, step: int, tokens: int | None = None) -> None:
        if not self.started:
            return
        self._on_rank0(lambda: self.prober.finish(model, step, tokens), "the end of training")

    def close(self) -> None:
        if self.prober is not None:
            self.prober.close()

    def _on_rank0(self, fn, when: str) -> None:
        error = None
        if self.rank0:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - handed to the other ranks, then raised here
                error = e
        # Every rank meets here: the barrier. A KeyboardInterrupt skips it, and reaches every rank anyway.
        message = self.sync(None if error is None else (str(error).splitlines() or [type(error).__name__])[0])
        if error is not None:
            self.close()
            raise error
        if message is not None:
            raise RankFailedError(f"rank 0's live probe failed at {when}: {message}")
