"""Capture engine: serve exactly what probes need from one forward pass, never a T x T map.

A custom attention function (registered with transformers' AttentionInterface, so every family in
harness/capture/arch.py routes through it) computes each layer's output with SDPA (or, where SDPA cannot
compute what the model does, the model's own eager function), then, from the q and k it was handed
(already past rotary, QK-norm and clip_qkv) and the mask (causal, padding, sliding window, ALiBi), the
requested statistics:

- attention rows for chosen query positions: (B, L, H, T)
- reductions over a range of queries, computed chunk by chunk: the mean attention along an
  offset diagonal, to a fixed key column, or the mean attention entropy: (B, L, H)
- per-head outputs z (the input of the output projection, split by head) at chosen positions
- logits at chosen positions (the unembedding runs only on those positions, only if asked)
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from harness.capture.arch import final_logits, head_layout

ATTN_IMPL = "ct_capture"
CHUNK_BYTES = 64 * 2**20  # working set of one chunk of full-query reductions


@dataclass(frozen=True)
class Reduction:
    """Mean over queries i in [lo, hi) of: A[i, i-arg] ("diag"), A[i, arg] ("col") or H(A[i]) ("entropy").

    Negative lo/hi count from the end; hi=None means T. Queries with no valid key are skipped; with an
    attention_mask, so are padding queries and queries whose key (i-arg, arg) is padding, row by row.
    """

    kind: str
    arg: int = 0
    lo: int = 0
    hi: int | None = None

    def __post_init__(self):
        if self.kind not in ("diag", "col", "entropy"):
            raise ValueError(f"unknown reduction '{self.kind}' (valid: diag, col, entropy)")


@dataclass(frozen=True)
class Needs:
    rows: frozenset = frozenset()  # query positions
    reductions: frozenset = frozenset()  # Reduction
    z: frozenset = frozenset()  # positions of per-head outputs
    logits: frozenset = frozenset()  # positions

    def __or__(self, other: Needs) -> Needs:
        return Needs(*(getattr(self, f) | getattr(other, f) for f in ("rows", "reductions", "z", "logits")))

    @staticmethod
    def of(rows=(), reductions=(), z=(), logits=()) -> Needs:
        return Needs(frozenset(rows), frozenset(reductions), frozenset(z), frozenset(logits))


@dataclass
class Capture:
    rows: dict = field(default_factory=dict)  # pos -> (B, L, H, T) float32
    reductions: dict = field(default_factory=dict)  # Reduction -> (B, L, H) float32
    z: dict = field(default_factory=dict)  # pos -> (B, L, H, d_head), model dtype
    logits: dict = field(default_factory=dict)  # pos -> (B, V) float32
    finite: bool = True  # every captured value and the final hidden state are finite (fp16 can overflow)


def _pos(p: int | None, T: int, default: int) -> int:
    return default if p is None else (p + T if p < 0 else p)


class _Recorder:
    """Collects per-layer statistics during one forward pass."""

    def __init__(self, needs: Needs, T: int, n_layers: int, ablate: dict | None, real=None):
        self.needs, self.T, self.ablate = needs, T, ablate or {}
        self.real = real  # (B, T) bool: real tokens (the attention_mask), None without padding
        self.per_layer: list[dict] = [dict() for _ in range(n_layers)]

    def layer(self, idx, query, key, mask, scaling, out, softcap=None):
        if idx in self.ablate:  # zero those heads' slice of the output-projection input
            out = out.clone()
            out[:, :, list(self.ablate[idx])] = 0
        rec, n = self.per_layer[idx], self.needs
        if n.rows or n.reductions:
            if key.shape[1] != query.shape[1]:  # grouped-query attention: share k across heads
                key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
            q, k = query.float(), key.float()
            if n.rows:
                qpos = torch.tensor([_pos(p, self.T, 0) for p in sorted(n.rows)], device=q.device)
                probs = _probs(q[:, :, qpos], k, qpos, mask, scaling, softcap)
                rec["rows"] = {p: probs[:, :, i] for i, p in enumerate(sorted(n.rows))}
            if n.reductions:
                rec["reductions"] = _reduce(q, k, mask, scaling, n.reductions, self.T, self.real, softcap)
        if n.z:
            # A copy: a view would keep the layer's whole (B, T, H, d) output alive until the pass ends.
            rec["z"] = {p: out[:, _pos(p, self.T, 0)].clone() for p in n.z}
        return out

    def capture(self) -> Capture:
        def stack(kind):  # per-layer dicts -> one (B, L, ...) tensor per key
            keys = self.per_layer[0].get(kind, {}).keys()
            return {key: torch.stack([rec[kind][key] for rec in self.per_layer], 1) for key in keys}

        return Capture(rows=stack("rows"), reductions=stack("reductions"), z=stack("z"))


_ACTIVE: _Recorder | None = None


def _scores(q, k, qpos, mask, scaling, softcap=None):
    """Masked scores in float32, exactly as eager attention builds them (softcapped before the mask)."""
    s = (q @ k.transpose(-1, -2)) * scaling
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    keys = torch.arange(k.shape[-2], device=k.device)
    s = s.masked_fill(keys[None, :] > qpos[:, None], torch.finfo(s.dtype).min)
    if mask is not None:
        m = mask[:, :, qpos] if mask.shape[-2] > 1 else mask
        s = s.masked_fill(~m, torch.finfo(s.dtype).min) if m.dtype == torch.bool else s + m.float()
    return s


def _probs(q, k, qpos, mask, scaling, softcap=None):
    return torch.softmax(_scores(q, k, qpos, mask, scaling, softcap), dim=-1)


def _reduce(q, k, mask, scaling, reductions, T, real=None, softcap=None):
    B, H = q.shape[:2]
    spans = {r: (_pos(r.lo, T, 0), _pos(r.hi, T, T)) for r in reductions}
    lo, hi = min(a for a, _ in spans.values()), max(b for _, b in spans.values())
    sums = {r: q.new_zeros(B, H) for r in reductions}
    counts = {r: q.new_zeros(B) for r in reductions}  # per row: padding differs from row to row
    real = None if real is None else real.to(q.device)
    chunk = max(1, CHUNK_BYTES // (4 * B * H * T))
    for c0 in range(lo, hi, chunk):
        qpos = torch.arange(c0, min(c0 + chunk, hi), device=q.device)
        p = _probs(q[:, :, qpos], k, qpos, mask, scaling, softcap)  # (B, H, C, T)
        for r, (a, b) in spans.items():
            sel = ((qpos >= a) & (qpos < b))[None].expand(B, -1)  # (B, C)
            if r.kind == "diag":
                sel = sel & (qpos - r.arg >= 0)
                keys = (qpos - r.arg).clamp(min=0)
                vals = p.gather(-1, keys.view(1, 1, -1, 1).expand(B, H, -1, 1)).squeeze(-1)
            elif r.kind == "col":
                sel = sel & (qpos >= r.arg)
                vals = p[..., r.arg]
            else:
                vals = -torch.special.xlogy(p, p).sum(-1)
            if real is not None:
                sel = sel & real[:, qpos]
                if r.kind == "diag":
                    sel = sel & real[:, keys]
                elif r.kind == "col":
                    sel = sel & real[:, r.arg, None]
            sums[r] += (vals * sel[:, None]).sum(-1)
            counts[r] += sel.sum(-1)
    return {r: sums[r] / counts[r].clamp(min=1)[:, None] for r in reductions}


def _eager_output(module, query, key, value, mask, scaling, dropout, **kwargs):
    """The layer output from the model's own eager function (what eager attention computes), for what SDPA cannot
    do (gemma2's softcap). That function adds its mask: ours is boolean, or None where causal is all there is."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    T, S = query.shape[-2], key.shape[-2]
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=query.device).tril(S - T)[None, None]
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~mask, torch.finfo(query.dtype).min)
    return eager(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)[0]


def capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Drop-in for transformers' sdpa attention that also feeds the active recorder."""
    softcap = kwargs.get("softcap")
    if softcap is None:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                        **kwargs)
    else:  # transformers' SDPA function refuses a softcap
        out = _eager_output(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if _ACTIVE is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = _ACTIVE.layer(module.layer_idx, query, key, attention_mask, scale, out, softcap)
    return out, None


AttentionInterface.register(ATTN_IMPL, capture_attention)
# Without a mask function of the same name the attention function would receive no padding mask.
AttentionMaskInterface.register(ATTN_IMPL, sdpa_mask)


class Engine:
    """Wraps a loaded causal LM; `run` does one forward pass and returns a Capture."""

    def __init__(self, model):
        self.model = model
        self.layout = head_layout(model.config)
        if model.config._attn_implementation != ATTN_IMPL:
            model.set_attn_implementation(ATTN_IMPL)

    @contextlib.contextmanager
    def _recording(self, rec):
        global _ACTIVE
        prev, _ACTIVE = _ACTIVE, rec
        try:
            yield rec
        finally:
            _ACTIVE = prev

    @torch.no_grad()  # not inference_mode: its tensors (e.g. cached rotary tables) break a training run's backward
    def run(self, input_ids, needs: Needs, attention_mask=None, ablate: dict | None = None) -> Capture:
        T = input_ids.shape[1]
        real = None if attention_mask is None else attention_mask.bool()
        with self._recording(_Recorder(needs, T, self.layout.n_layers, ablate, real)) as rec:
            # The base model skips the unembedding (half of a small model's forward).
            hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        cap = rec.capture()
        if needs.logits:
            head = self.model.get_output_embeddings()
            pos = sorted(needs.logits)
            logits = final_logits(self.model, head(hidden[:, [_pos(p, T, 0) for p in pos]])).float()
            cap.logits = {p: logits[:, i] for i, p in enumerate(pos)}
        # A probe would turn inf/NaN into plausible-looking numbers (a NaN compares False against every
        # threshold): the loop refuses such a forward pass instead.
        tensors = [hidden, *(t for d in (cap.rows, cap.reductions, cap.z, cap.logits) for t in d.values())]
        cap.finite = all(bool(torch.isfinite(t).all()) for t in tensors)
        return cap
