"""auto_batch_size: at least 1, monotone in free memory and sequence length, and its batch really fits."""
from __future__ import annotations

import torch
from conftest import tiny_model
from torch.profiler import ProfilerActivity, profile

from harness.engine import Engine, Needs, Reduction
from harness.memory import (
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
