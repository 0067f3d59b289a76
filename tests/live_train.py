"""Real training runs for tests/test_live_callbacks.py: a Hugging Face Trainer and a Lightning Trainer on a tiny model.

Imported by the tests (in-process HF runs), and run as a script where a run needs processes of its own:

    python tests/live_train.py lightning <tmp> [ddp_spawn|model_parallel]   Lightning, 2 CPU processes (or FSDP2)
    python tests/live_train.py hf <tmp> [run|trainer|fsdp]                   HF with report_to=wandb (or FSDP)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from conftest import tiny_model
from transformers import Trainer, TrainerCallback, TrainingArguments

SEQ = 33  # BOS + a random segment + the segment again


class Repeats(torch.utils.data.Dataset):
    """Seeded sequences of a repeated random segment: each example the same on every run and rank."""

    def __init__(self, n: int = 128, seq: int = SEQ):
        self.n, self.half = n, (seq - 1) // 2

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        r = torch.randint(5, 97, (self.half,), generator=torch.Generator().manual_seed(1000 + i))
        ids = torch.cat([torch.zeros(1, dtype=torch.long), r, r])
        return {"input_ids": ids, "labels": ids}


def overrides(tmp: Path, name: str | None = None) -> list[str]:
    """The probe settings, shared by the live runs and the `python -m harness model=local` sweep they are
    compared with."""
    return ["model.batch.vocab_lo=5", "model.batch.vocab_hi=97", "model.batch.seq_len=64", "model.bos_id=0",
            "data.n=40", "probe=all", "probe.pr.n=20", "probe.null.draws=50", "runner.device=cpu",
            "runner.dtype=float32", "runner.progress_bar=false", f"paths.root_dir={tmp}", "logger.mode=offline",
            *([f"model.name={name}"] if name else [])]


class SaveAt(TrainerCallback):
    """save_pretrained at the given steps (step 0 before training), named as `model=local` reads them."""

    def __init__(self, folder: Path, steps):
        self.folder, self.steps = Path(folder), set(steps)

    def on_train_begin(self, args, state, control, model=None, **kw):
        if 0 in self.steps:
            model.save_pretrained(self.folder / "step0")

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step in self.steps:
            model.save_pretrained(self.folder / f"step{state.global_step}")


class After(TrainerCallback):
    """What each optimizer step left: (step, attention implementation, train mode)."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, args, state, control, model=None, **kw):
        self.seen.append((state.global_step, model.config._attn_implementation, model.training))


def hf_train(out: Path, callbacks=(), *, steps: int = 64, arch="gpt_neox", report_to="none", run_name=None,
             resume=None, **args):
    """64 optimizer steps of 2 accumulated micro-batches of 4 (or resumed from a checkpoint folder); returns (model,
    per-step losses)."""
    model = tiny_model(arch, attn="sdpa").train()
    targs = TrainingArguments(**{**dict(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        learning_rate=3e-3, seed=0, use_cpu=True, report_to=report_to, run_name=run_name, save_strategy="no",
        logging_steps=1, disable_tqdm=True, dataloader_num_workers=0), **args})
    trainer = Trainer(model=model, args=targs, train_dataset=Repeats(), callbacks=list(callbacks))
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model, losses


# ---------------------------------------------------------------------------------------------- Lightning

import lightning as L  # noqa: E402


class TinyLM(L.LightningModule):
    """A LightningModule around the tiny HF model (module level: ddp_spawn pickles it into each process)."""

    def __init__(self):
        super().__init__()
        self.model = tiny_model("gpt_neox", attn="sdpa").train()

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


class RankLog(L.Callback):
    """Each rank's own account, written where it ran: did it hold a prober, at which steps did it wait."""

    def __init__(self, probe, folder: Path):
        self.probe, self.folder, self.batches = probe, folder, 0

    def on_train_batch_start(self, *a):
        self.batches += 1

    def teardown(self, trainer, pl_module, stage):
        live, prober = self.probe.live, self.probe.prober
        record = {"rank": trainer.global_rank, "pid": os.getpid(), "batches": self.batches,
                  "prober": prober is not None, "global_step": trainer.global_step,
                  "probed": list(prober.probed) if prober else [], "waited": list(live.steps_waited) if live else []}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def lightning_run(tmp: Path, strategy: str) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    from harness.live.lightning import ProbeCallback

    probe = ProbeCallback(overrides=overrides(tmp), schedule=[0, 3, 8, 16])
    devices, strat = (2, "ddp_spawn") if strategy == "ddp_spawn" else (1, ModelParallelStrategy())
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strat, max_steps=16, accumulate_grad_batches=2,
                        callbacks=[probe, RankLog(probe, tmp)], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(Repeats(64), batch_size=4, shuffle=True)
    trainer.fit(TinyLM(), loader)


def hf_script(tmp: Path, mode: str) -> None:
    from harness.live.hf import ProbeCallback

    if mode == "fsdp":  # a one-process "distributed" world: enough for the Trainer to shard with FSDP2 on CPU
        probe = ProbeCallback("tiny-hf", overrides=overrides(tmp), schedule=[0, 8, 16], wandb="off")
        hf_train(tmp / "out", [probe], steps=16, fsdp=True, fsdp_config={"version": 2})
        return
    probe = ProbeCallback("tiny-hf", overrides=overrides(tmp), schedule=[0, 8, 16], wandb=mode)
    hf_train(tmp / "out", [probe], steps=16, report_to="wandb", run_name="trainer-run", logging_steps=4)


if __name__ == "__main__":
    torch.set_num_threads(1)
    kind, folder, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    (lightning_run if kind == "lightning" else hf_script)(folder, mode)
