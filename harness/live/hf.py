"""Probe a Hugging Face Trainer run while it trains: one callback, the sweep's store, findings and W&B conventions.

    from harness.live.hf import ProbeCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[ProbeCallback(overrides=[...], schedule="log")])

The Trainer calls `on_step_end` after each optimizer step (`global_step` already counts it; never while gradients
accumulate) and before it saves or evaluates, so a checkpoint saved at step N holds the weights probed at step N.
The world's process 0 probes; the other processes wait for it. The initial weights are probed as step 0 in
`on_train_begin`. The Trainer needs `accelerate` (the `live` extra).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from harness.live import ranks


class ProbeCallback(TrainerCallback):
    """Same arguments as harness.live.prober.LiveProber; `name` defaults to `args.run_name` (else the output
    folder's name), `total_steps` to the Trainer's `max_steps`, `tokens_per_step` to the batch per step times the
    training sequence length when the data has one fixed length."""

    def __init__(self, name: str | None = None, *, overrides=(), total_steps: int | None = None,
                 tokens_per_step: int | None = None, schedule="log", max_overhead: float | None = None,
                 wandb: str = "run", source: str = "live"):
        self.opts = ranks.options(name, overrides, total_steps, tokens_per_step, schedule, max_overhead, wandb, source)
        self.live: ranks.RankedProber | None = None

    @property
    def prober(self):
        """This process's LiveProber: process 0's once training started, None on the others."""
        return self.live.prober if self.live is not None else None

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        sharded = _sharded(args, model)
        if sharded:
            ranks.refuse_sharded(sharded)
        hf = ranks.hf_model(model)
        world = max(int(args.world_size), 1)
        self.live = ranks.RankedProber(self.opts, rank0=state.is_world_process_zero, world=world, sync=_sync(world))
        seq_len = _fixed_length(getattr(train_dataloader, "dataset", None))
        per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps * world * seq_len
                    if seq_len else None)
        try:
            self.live.start(name=Path(args.run_name or args.output_dir or type(hf).__name__).name,
                            total_steps=state.max_steps if state.max_steps and state.max_steps > 0 else None,
                            tokens_per_step=per_step, resumed_at=state.global_step)
            if state.global_step == 0:
                self.live.step(hf, 0, _tokens(args, state), provenance=_provenance(args))
        except BaseException:
            self.live.close()  # the Trainer tells callbacks nothing of an exception: close our W&B run here
            raise

    def on_step_end(self, args, state, control, model=None, **kwargs):
        try:
            self.live.step(ranks.hf_model(model), state.global_step, _tokens(args, state), provenance=_provenance(args))
        except BaseException:
            self.live.close()
            raise

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.live is None:
            return
        # With load_best_model_at_end the model here holds the best checkpoint's weights, not the last step's: the
        # last step is then probed only if the schedule had it (it does unless training stopped early).
        final = None if args.load_best_model_at_end else ranks.hf_model(model)
        self.live.finish(final, state.global_step, _tokens(args, state))


def _sharded(args, model) -> str | None:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if getattr(args, "fsdp", None) or _fsdp_wrapped(model):
        return "FSDP (TrainingArguments.fsdp)"
    if is_deepspeed_zero3_enabled() or any(hasattr(p, "ds_id") for p in model.parameters()):
        return "DeepSpeed ZeRO stage 3"
    return None


def _fsdp_wrapped(model) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # a torch built without distributed support cannot shard
        return False
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


def _sync(world: int):
    """A broadcast of one object from process 0, or nothing to do in a single process."""
    if world <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return lambda obj: obj

    def broadcast(obj):
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    return broadcast


def _tokens(args, state) -> int | None:
    """The Trainer's own count when it keeps one (include_num_input_tokens_seen), else None: tokens_per_step."""
    if getattr(args, "include_num_input_tokens_seen", "no") not in (False, None, "no") and state.num_input_tokens_seen:
        return int(state.num_input_tokens_seen)
    return None


def _provenance(args) -> dict:
    return {"trainer": "transformers", "world_size": int(args.world_size)}


def _fixed_length(dataset) -> int | None:
    """The sequence length when the first and last examples' input_ids have the same length, else None. Reading
    an example may run the dataset's transforms: the random generators are put back as they were."""
    try:
        n = len(dataset)
    except TypeError:  # an iterable dataset (or none): no example to look at without consuming the stream
        return None
    if not n:
        return None
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            lengths = {_length(dataset[0]), _length(dataset[n - 1])}
    except Exception:  # noqa: BLE001 - a dataset we cannot index: no default, LiveProber counts no tokens
        return None
    finally:
        random.setstate(py)
        np.random.set_state(npy)
    return lengths.pop() if len(lengths) == 1 and None not in lengths else None


def _length(example) -> int | None:
    ids = example.get("input_ids") if hasattr(example, "get") else None
    if ids is None:
        return None
    return int(ids.shape[-1]) if hasattr(ids, "shape") else len(ids)
