"""auto_batch_size: at least 1, monotone in free memory and sequence length, and its batch really fits."""
from __future__ import annotations

import numpy as np
import torch
from conftest import tiny_model
from torch.profiler import ProfilerActivity, profile

from harness.capture.engine import Engine, Needs, Reduction
from harness.capture.memory import (
    _weights_to_place,
    auto_batch_size,
    dtype_nbytes,
    free_memory,
    per_sequence_bytes,
    resolve_device,
)

SUITE = Needs.of(rows=[-1])
MB = 2**20


def test_at_least_one_and_capped(arch):
    model = tiny_model(arch, attn="sdpa")
    assert auto_batch_size(model, 256, SUITE, "cpu", 4, free_bytes=1) == 1
    assert auto_batch_size(model, 256, SUITE, "cpu", 4, free_bytes=2**50, cap=77) == 77
    assert auto_batch_size(model, 256, SUITE, "cpu", 4) >= 1  # real free memory


def test_grows_with_free_memory_and_shrinks_with_seq_len():
    model = tiny_model("gpt_neox", attn="sdpa")
    sizes = [auto_batch_size(model, 256, SUITE, "cpu", 4, free_bytes=f * MB, cap=10**6) for f in (8, 64, 512)]
    assert sizes[0] < sizes[1] < sizes[2]
    by_len = [auto_batch_size(model, T, SUITE, "cpu", 4, free_bytes=512 * MB, cap=10**6) for T in (64, 256, 1024)]
    assert by_len[0] > by_len[1] > by_len[2]
    # more needs, fewer sequences; half precision, more
    rich = Needs.of(rows=[-1, 5], reductions=[Reduction("entropy")], z=[-1], logits=[-1])
    assert auto_batch_size(model, 256, rich, "cpu", 4, free_bytes=512 * MB, cap=10**6) < by_len[1]
    assert auto_batch_size(model, 256, SUITE, "cpu", 2, free_bytes=512 * MB, cap=10**6) > by_len[1]


def _torch_peak(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def test_chosen_batch_runs_within_budget(arch):
    """A small injected budget gives a batch > 1 whose real forward pass stays within that budget."""
    model = tiny_model(arch, attn="sdpa")
    T, free, frac = 128, 16 * MB, 0.5
    needs = Needs.of(rows=[-1], z=[-1], logits=[-1])
    b = auto_batch_size(model, T, needs, "cpu", 4, budget_fraction=frac, free_bytes=free)
    assert 1 < b < 512
    engine = Engine(model)
    ids = torch.randint(1, 97, (b, T))
    out = {}
    peak = _torch_peak(lambda: out.setdefault("cap", engine.run(ids, needs)))
    assert out["cap"].rows[-1].shape[0] == b and out["cap"].logits[-1].shape[0] == b
    assert peak <= free * frac, (b, peak)
    # the estimate is generous but not absurdly so (within 4x of the real per-sequence peak)
    assert per_sequence_bytes(model.config, T, needs, 4) * b < 4 * peak


def test_helpers():
    assert dtype_nbytes("bfloat16") == 2 and dtype_nbytes(torch.float32) == 4
    assert resolve_device("cpu").type == "cpu" and resolve_device("gpu").type == "cuda"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert free_memory("cpu") > 0
    model = tiny_model("gpt_neox", attn="sdpa")
    n = sum(p.numel() for p in model.parameters())
    assert _weights_to_place(model, torch.device("cpu"), 4) == 0  # already there
    assert _weights_to_place(model, torch.device("cuda"), 2) >= 2 * n  # still to be placed on the GPU


def test_out_of_memory_halves_the_batch_and_the_revision_goes_on(caplog):
    """A device that fits 4 sequences (a pre-hook raises torch's OutOfMemoryError above that, where a GPU would):
    a batch of 16 is halved until it fits, the log says so, and the results equal a run at batch size 4."""
    import copy
    import logging
    from types import SimpleNamespace

    from harness.capture.arch import head_layout
    from harness.capture.batches import induction_batch
    from harness.run import loop
    from probes.base import Context
    from probes.selectivity import Selectivity

    def run(model, batch_size):
        batch = induction_batch(n=30, seq_len=64, vocab_lo=5, vocab_hi=97)
        ctx = Context(head_layout(model.config), batch, {"name": "tiny"})
        runner = SimpleNamespace(device="cpu", dtype="float32", batch_size=batch_size, progress_bar=False)
        return loop.run_checkpoint(model, loop.group_by_batch([Selectivity()], batch, ctx), model_cfg={"name": "tiny"},
                                   revision="r", runner=runner)["selectivity"].heads

    def fits_four(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("simulated: 4 sequences fit")

    model = tiny_model("gpt_neox")
    want = run(copy.deepcopy(model), 4)
    model.base_model.register_forward_pre_hook(fits_four, with_kwargs=True)
    with caplog.at_level(logging.WARNING, logger="harness.run.loop"):
        got = run(model, 16)
    for k in ("induction", "first_token", "previous_token"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    halvings = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert halvings == ["out of memory on a batch of 16: continuing with batches of 8 (runner.batch_size)",
                        "out of memory on a batch of 8: continuing with batches of 4 (runner.batch_size)"]
