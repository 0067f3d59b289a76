"""Pick a batch size from available memory (`runner.batch_size=auto`).

The capture engine never holds a T x T map, so memory per sequence is linear in T: one layer's
activations at a time (inference mode frees each layer's intermediates before the next) plus
what the engine keeps across layers (attention rows, z, logits at requested positions). We
estimate that per-sequence figure from the config, divide a fraction of the free memory by it,
and clamp to [1, cap]. The estimate is deliberately generous (it over-counts live tensors
rather than under-counts); `budget_fraction` is the remaining safety margin.
"""
from __future__ import annotations

import os

import torch

from harness.capture import engine as _engine
from harness.capture.arch import head_layout, text_config
from harness.capture.engine import Needs

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def dtype_nbytes(dtype) -> int:
    """Bytes per element of a dtype given as a runner string ("bfloat16") or a torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).element_size()
    return DTYPE_BYTES[str(dtype).removeprefix("torch.")]


def resolve_device(device) -> torch.device:
    """Lightning accelerator names (auto | cpu | gpu) and torch names (cuda, cuda:1) -> torch.device."""
    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu":
        return torch.device("cuda")
    return torch.device(name)


def _cgroup_available() -> int | None:
    """Room left under a cgroup (v2 or v1) memory limit, if one is set: containers see the host's /proc/meminfo."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f:
                raw = f.read().strip()
            if raw == "max" or int(raw) >= 2**60:  # "no limit" (v1 reports a huge number)
                return None
            with open(usage) as f:
                return max(0, int(raw) - int(f.read().strip()))
        except (OSError, ValueError):
            continue
    return None


def free_memory(device) -> int:
    """Bytes that one more allocation could use now on `device`."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        # Blocks PyTorch's caching allocator holds but does not use are free to us, not to mem_get_info.
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:  # not Linux
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except ImportError:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cg = _cgroup_available()
    return min(avail, cg) if cg is not None else avail


def fixed_bytes(needs: Needs) -> int:
    """Memory that does not scale with the batch: the chunked full-query reductions.

    The engine sizes a chunk so its (B, H, C, T) probabilities stay under CHUNK_BYTES whatever B is;
    scores, the masked copy, softmax and the per-kind values (xlogy) are alive together: ~4 of them.
    """
    return 4 * _engine.CHUNK_BYTES if needs.reductions else 0


def per_sequence_bytes(config, seq_len: int, needs: Needs, dtype_bytes: int) -> int:
    """Peak bytes one sequence adds to a forward pass through the engine (weights excluded)."""
    T, b = seq_len, dtype_bytes
    config = text_config(config)  # a multimodal wrapper: its language model's sizes
    lay = head_layout(config)
    L, H, dh, kv = lay.n_layers, lay.n_heads, lay.d_head, lay.n_kv_heads
    d = config.hidden_size
    inter = getattr(config, "intermediate_size", None) or 4 * d
    experts_per_tok = getattr(config, "num_experts_per_tok", None) or 1

    # --- one layer's activations (only one layer is alive at a time under inference_mode) ---
    # residual stream: input, norm outputs (two for parallel-residual GPT-NeoX), attention out, MLP out, sum
    hidden = 6 * d
    # projections: q/k/v (fused or not) and their rotary/QK-norm/clip copies, SDPA output and its
    # transposed-contiguous copy before the output projection
    qkv = 2 * (H + 2 * kv) * dh + 2 * H * dh
    # MLP: up (and gate for SwiGLU) plus the activation output; MoE runs top-k experts per token
    mlp = 3 * inter * experts_per_tok
    act = T * b * (hidden + qkv + mlp)
    n_experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    if n_experts:
        # router logits and softmax (float32); the eager experts loop's one_hot(top_k, E + 1) int64 mask.
        # (Experts run one at a time, so their activations are bounded by the MLP term above.)
        act += T * (4 * n_experts * 2 + 8 * experts_per_tok * (n_experts + 1))
    # SDPA's fused kernels (CPU flash, CUDA flash/mem-efficient) never materialise scores; a padding
    # mask is (T, T) bool per sequence.
    act += T * T

    # --- what the engine adds ---
    extra = T * 8  # input ids
    if (needs.rows or needs.reductions) and b != 4:
        extra += 2 * H * dh * T * 4  # q.float(), k.float() (k repeated to H heads for grouped-query attention)
    if needs.rows:
        n = len(needs.rows)
        extra += n * L * H * T * 4  # kept rows, float32, all layers
        extra += 3 * n * H * T * 4  # this layer's scores, masked copy and softmax
    if needs.reductions:
        extra += len(needs.reductions) * L * H * 4
        # a chunk of one query (the floor) may exceed CHUNK_BYTES: (B, H, 1, T) float32, ~4 alive
        extra += 4 * H * T * 4
    if needs.z:
        extra += len(needs.z) * L * H * dh * b  # copies at the requested positions, all layers
    if needs.logits:
        V = config.vocab_size
        extra += len(needs.logits) * (V * b + V * 4 + d * b)  # head output, float32 copy, gathered hidden
    return int(act + extra)


def _weights_to_place(model, device: torch.device, dtype_bytes: int) -> int:
    """Bytes the weights will take on `device` once placed there (0 if they already are).

    The loop calls this before Lightning moves the model to the GPU, so free GPU memory does not
    yet account for the weights.
    """
    try:
        p = next(model.parameters())
    except StopIteration:
        return 0
    if p.device.type == device.type:
        return 0
    return sum(t.numel() for t in model.parameters()) * dtype_bytes + sum(
        t.numel() * t.element_size() for t in model.buffers())


def auto_batch_size(model, seq_len: int, needs: Needs, device, dtype_bytes: int, budget_fraction: float = 0.5,
                    cap: int = 512, free_bytes: int | None = None) -> int:
    """The largest batch whose estimated forward-pass memory fits `budget_fraction` of the free memory.

    `free_bytes` overrides the measured free memory (tests; or a fixed budget). Returns 1..cap.
    """
    dev = resolve_device(device)
    free = free_memory(dev) if free_bytes is None else int(free_bytes)
    free -= _weights_to_place(model, dev, dtype_bytes)
    budget = free * budget_fraction - fixed_bytes(needs)
    per_seq = per_sequence_bytes(model.config, seq_len, needs, dtype_bytes)
    return int(max(1, min(cap, budget // per_seq)))
