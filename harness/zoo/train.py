"""Train one zoo suite and publish its checkpoints as hub-cache revisions `step<N>` (+ `main` = final).

A recipe is a plain dict (one `conf/zoo/suite/*.yaml`): model shape, data, optimiser, phases and the
checkpoint schedule. Phases switch the data mix, learning rate and frozen layers at a fraction of the
steps. The sink recipe (olmo.yaml): repeats at lr 1e-3 until the induction circuit forms, then a low-lr hold
with the spare third layer frozen (the circuit sharpens; none of its heads can drift onto BOS), then lr 1e-3
again from twice the formation tokens with the circuit's layers frozen, when a third-layer head turns into a BOS
attractor: sinks come clearly after the circuit, as in the study.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from harness.capture.arch import blocks
from harness.common import files
from harness.common.errors import HarnessError
from harness.sources import hubcache
from harness.zoo.live import SuiteProber
from harness.zoo.models import make_model
from harness.zoo.tasks import bigram_chain, train_batch

RECIPE_FILE = "zoo_recipe.json"
STATE_FILE = "zoo-train-state.pt"  # in the repo's cache folder, beside refs/ (the hub cache scan ignores it)


class ZooError(HarnessError, ValueError):
    """A zoo build asked for something its config does not have (a suite, a step)."""


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """0, 1, 2, 4, 8, ... (log-spaced: early development is fast) plus every `every` steps, plus the last."""
    log = {2 ** k for k in range(steps.bit_length()) if 2 ** k <= steps}
    return sorted({0, steps} | log | set(range(every, steps + 1, every)))


def check_until(recipe: dict, until: int) -> int:
    """`until` must be a checkpoint step of the recipe: a partial build ends on a revision the full one has."""
    ckpts = checkpoint_steps(recipe["steps"], recipe["ckpt_every"])
    if until not in ckpts:
        near = [max([s for s in ckpts if s < until], default=None), min([s for s in ckpts if s > until], default=None)]
        raise ZooError(f"until={until} is not a checkpoint step of this recipe (nearest: "
                       f"{' and '.join(str(s) for s in near if s is not None)}; checkpoints every "
                       f"{recipe['ckpt_every']} steps up to {recipe['steps']}, and log-spaced before)")
    return until


def built_hash(repo: str, cache=None) -> str | None:
    """The recipe hash of the suite's published `main`, if any."""
    snap = hubcache.resolve(repo, "main", cache)
    meta = snap / RECIPE_FILE if snap else None
    return json.loads(meta.read_text()).get("recipe_hash") if meta and meta.is_file() else None


def phase_at(recipe: dict, step: int) -> dict:
    """The phase whose `start` (a fraction of the steps) is the latest one <= step."""
    phases = sorted(recipe["phases"].items(), key=lambda kv: kv[1]["start"])
    current = phases[0][1]
    for _, ph in phases:
        if step >= round(ph["start"] * recipe["steps"]):  # the same rounding as phase_span
            current = ph
    return current


def phase_span(recipe: dict, step: int) -> tuple[int, int]:
    """[first, end) steps of the phase that holds `step` (the end is the next phase's start, or the last step)."""
    steps = recipe["steps"]
    starts = sorted({min(steps, round(ph["start"] * steps)) for ph in recipe["phases"].values()} | {steps})
    first = max([s for s in starts if s <= step], default=0)
    return first, min([s for s in starts if s > step], default=steps)


def lr_at(recipe: dict, step: int) -> float:
    """The phase's lr with a linear warmup from the first step, then, with `decay` < 1, a cosine decay to
    `decay` x lr by the end of each phase (the circuit settles before the next phase and at the last step)."""
    ph = phase_at(recipe, step)
    lr = ph["lr"] * min(1.0, (step + 1) / recipe["warmup"])
    floor = ph.get("decay", recipe.get("decay", 1.0))
    if floor < 1.0:
        first, end = phase_span(recipe, step)
        frac = (step - first) / max(1, end - 1 - first)
        lr *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
    return lr


def mix_at(recipe: dict, step: int, key: str) -> float:
    """The phase's fraction of a task, ramped up linearly over the phase's first `ramp` steps (a task that
    arrives at once shocks the circuit that is already there)."""
    ph = phase_at(recipe, step)
    ramp = ph.get("ramp", 0)
    return ph.get(key, 0.0) * (min(1.0, (step - phase_span(recipe, step)[0] + 1) / ramp) if ramp else 1.0)


def built_with() -> dict:
    """What the bits depend on beyond the recipe: package versions and the kernels' instruction set."""
    import transformers

    return dict(torch=torch.__version__, transformers=transformers.__version__, numpy=np.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())


def save(model, recipe: dict, name: str, step: int, loss: float | None, cache, repo: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)  # safetensors
        meta = dict(suite=name, recipe=recipe, recipe_hash=recipe_hash(recipe), step=step,
                    tokens=step * recipe["batch"] * recipe["seq_len"], train_loss=loss, built_with=built_with())
        Path(d, RECIPE_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        return hubcache.publish(d, repo, f"step{step}", cache)


def save_state(path: Path, h: str, step: int, model, opt, rng, losses: list[float]) -> None:
    """The training state after `step` updates (weights, AdamW moments, data stream), replaced atomically."""
    state = dict(recipe_hash=h, step=step, model=model.state_dict(), opt=opt.state_dict(),
                 rng=rng.bit_generator.state, losses=losses[-20:])
    files.atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path, h: str, published: list[int], repo: str, cache) -> dict | None:
    """The saved state of an interrupted build of this recipe, if readable and its revisions are all there."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:  # a torn or foreign file: start over
        print(f"zoo: the saved training state {path} is corrupt ({type(e).__name__}: {e}); training from step 0")
        return None
    except PermissionError as e:  # not ours to replace: say so rather than redo the build beside it
        raise ZooError(f"cannot read the saved training state {path}: no permission ({e.strerror})") from None
    if not state or state.get("recipe_hash") != h:
        return None
    have = all(hubcache.resolve(repo, f"step{s}", cache) for s in published if s <= state["step"])
    return state if have else None


def build_suite(name: str, recipe: dict, cache=None, force: bool = False, progress: bool = True,
                position: int | None = None, until: int | None = None, live: dict | None = None) -> dict:
    """Train and publish one suite; skip it when `main` already holds this recipe's hash.

    An interrupted build of the same recipe resumes from its last checkpoint (the state saved there), and
    publishes the same revisions as an uninterrupted one; `force` starts over. `until` (one of the recipe's
    checkpoint steps) stops there: the same weights as the full build up to that step, no `main`, and the
    state kept, so the same command without `until` carries on from it. `live` (the build config's `live:`
    section, when on): probe the suite while it trains (harness.zoo.live); probing never changes the build."""
    repo, h = recipe["repo"], recipe_hash(recipe)
    last = recipe["steps"] if until is None else check_until(recipe, until)
    all_ckpts = checkpoint_steps(recipe["steps"], recipe["ckpt_every"])
    probe = SuiteProber(name, recipe, live, cache, all_ckpts, progress) if live else None
    try:
        if not force and built_hash(repo, cache) == h:
            return dict(suite=name, repo=repo, status="skipped", recipe_hash=h, seconds=0.0,
                        live=probe and probe.finish_built(recipe["steps"], final=True))
        return _train(name, recipe, h, cache, force, progress, position, last, probe)
    except BaseException:
        if probe:
            probe.close()
        raise


def _train(name, recipe, h, cache, force, progress, position, last, probe) -> dict:
    repo = recipe["repo"]
    t0 = time.time()
    hf_logging.disable_progress_bar()  # one bar per suite, not one per saved shard
    seed, steps, m = recipe["seed"], recipe["steps"], recipe["model"]
    model = make_model(recipe["arch"], seed, **m).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr_at(recipe, 0), betas=tuple(recipe["betas"]),
                            weight_decay=recipe["weight_decay"])
    rng = np.random.default_rng(seed)  # one stream for all batches: deterministic given the seed
    chain = bigram_chain(seed + 1, m["vocab"], recipe["data"]["n_succ"], recipe["data"]["alpha"])
    ckpts = {s for s in checkpoint_steps(steps, recipe["ckpt_every"]) if s <= last} | {last}
    folder = hubcache.repo_folder(repo, cache)
    state_path = folder / STATE_FILE
    state = None if force else load_state(state_path, h, sorted(ckpts), repo, cache)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        if probe:
            probe.resume(state["step"])
    else:  # drop the old recipe's refs first (main goes last): no stale revision survives a rebuild
        shutil.rmtree(folder / "refs", ignore_errors=True)
    start = state["step"] if state else 0
    if start >= last:  # an earlier partial build already went this far
        return dict(suite=name, repo=repo, status="skipped", recipe_hash=h, seconds=0.0, until=start,
                    live=probe and probe.finish_built(start, final=False))
    losses: list[float] = state["losses"] if state else []
    bar = tqdm(range(start, last + 1), desc=f"zoo-{name}", disable=not progress, mininterval=1.0,
               position=position, initial=start, total=last + 1)
    for step in bar:
        if step in ckpts and not (state and step == start):  # step N = the weights after N updates
            model.eval()
            commit = save(model, recipe, name, step, float(np.mean(losses[-20:])) if losses else None, cache, repo)
            model.train()
            if probe:  # before the state: a build killed while probing probes this step again
                probe.at(model, step, commit)
            if step < steps:
                save_state(state_path, h, step, model, opt, rng, losses)
        if step == last:
            break
        ph = phase_at(recipe, step)
        ids = torch.from_numpy(train_batch(rng, chain, recipe["batch"], recipe["seq_len"], m["vocab"],
                                           ph["backcopy"], recipe["data"], ph.get("repeat_triggers", 0.0),
                                           ph.get("mode", 0.0), mix_at(recipe, step, "recall")))
        for g in opt.param_groups:
            g["lr"] = lr_at(recipe, step)
        loss = model(ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for layer in ph.get("frozen", []):  # no grad: AdamW skips these (no step, no weight decay)
            for p in blocks(model)[layer].parameters():
                p.grad = None
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr_at(recipe, step):.1e}")
    if last == steps:
        hubcache.publish(hubcache.resolve(repo, f"step{last}", cache), repo, "main", cache)
        state_path.unlink(missing_ok=True)
    live = probe.finish(final=last == steps) if probe else None
    return dict(suite=name, repo=repo, status="built" if last == steps else "partial", until=last, recipe_hash=h,
                commit=commit, seconds=time.time() - t0, live=live,
                resumed_from=start if state else None, final_loss=float(np.mean(losses[-20:])) if losses else None)
