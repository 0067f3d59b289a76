"""Attention-sink rate of Gu et al. (docs/method.md section 3).

alpha = mean over queries i >= 1 of A[i, 0]; a sink head when alpha > epsilon (0.3). Measured on the
shared induction batch and, when the checkpoint ships a tokenizer (found offline: `model.tokenizer`,
else the checkpoint's folder or hub revision) and `text` is set, on windows of natural text too.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from harness.capture.engine import Needs, Reduction
from probes.base import Context, Probe, ProbeResult, Step

ALPHA = Reduction("col", 0, 1)  # mean over queries i >= 1 of A[i, 0]

# Public-domain prose (US Declaration of Independence), the default natural text.
DEFAULT_TEXT = (
    "When in the Course of human events, it becomes necessary for one people to dissolve the political bands "
    "which have connected them with another, and to assume among the powers of the earth, the separate and equal "
    "station to which the Laws of Nature and of Nature's God entitle them, a decent respect to the opinions of "
    "mankind requires that they should declare the causes which impel them to the separation. We hold these truths "
    "to be self-evident, that all men are created equal, that they are endowed by their Creator with certain "
    "unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. That to secure these "
    "rights, Governments are instituted among Men, deriving their just powers from the consent of the governed, "
    "That whenever any Form of Government becomes destructive of these ends, it is the Right of the People to alter "
    "or to abolish it, and to institute new Government, laying its foundation on such principles and organizing its "
    "powers in such form, as to them shall seem most likely to effect their Safety and Happiness. Prudence, indeed, "
    "will dictate that Governments long established should not be changed for light and transient causes; and "
    "accordingly all experience hath shewn, that mankind are more disposed to suffer, while evils are sufferable, "
    "than to right themselves by abolishing the forms to which they are accustomed."
)


def find_tokenizer(ctx: Context):
    """The checkpoint's tokenizer from local files only, or None (the zoo has none; that is fine)."""
    from transformers import AutoTokenizer

    src = ctx.model_cfg.get("tokenizer") or getattr(getattr(ctx.engine, "model", None), "name_or_path", "")
    if not src:
        return None
    kw = {} if os.path.isdir(src) or not ctx.revision else {"revision": ctx.revision}
    try:
        return AutoTokenizer.from_pretrained(src, local_files_only=True, **kw)
    except Exception:  # noqa: BLE001 - no tokenizer files, not cached, unknown class: skip the text batch
        return None


class SinkRate(Probe):
    """Gu et al.'s attention-sink score: alpha = mean attention of queries i >= 1 to position 0; sink head when alpha > epsilon."""

    columns = ("alpha", "is_sink", "alpha_text", "is_sink_text")

    name = "sink"

    def __init__(self, epsilon=0.3, text="default", text_len=64, text_n=32):
        self.epsilon, self.text, self.text_len, self.text_n = epsilon, text, text_len, text_n

    def needs(self, batch):
        return Needs.of(reductions=[ALPHA])

    def text_ids(self, ctx: Context):
        """(n, text_len) windows of the natural text, or None."""
        if not self.text:
            return None
        tok = find_tokenizer(ctx)
        if tok is None:
            return None
        text = DEFAULT_TEXT if self.text == "default" else self.text
        if os.path.isfile(text):
            with open(text) as f:
                text = f.read()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        bos = ctx.model_cfg.get("bos_id")
        prefix = [bos] if ctx.batch.meta.get("prepend_bos") and bos is not None else []  # follow the run's data choice
        k = self.text_len - len(prefix)
        w = [prefix + ids[i * k:(i + 1) * k] for i in range(min(self.text_n, max(1, len(ids) // k)))]
        ids = torch.tensor(w, dtype=torch.long)
        vocab = ctx.engine.model.config.vocab_size
        return ids if ids.shape[1] >= 2 and int(ids.max()) < vocab else None

    def on_checkpoint_start(self, ctx: Context):
        L, H = ctx.layout.n_layers, ctx.layout.n_heads
        self.sum, self.n, self.seq_rate = np.zeros((L, H)), 0, 0.0
        self.text_batch, self.text_alpha = self.text_ids(ctx), None

    def on_batch(self, step: Step, ctx: Context):
        alpha = step.capture.reductions[ALPHA].double()  # (B, L, H), one alpha per sequence
        self.sum += alpha.sum(0).cpu().numpy()
        self.seq_rate += float((alpha > self.epsilon).double().mean((1, 2)).sum())
        self.n += len(step.index)
        if self.text_batch is not None and self.text_alpha is None:
            # Extra passes run here, inside the loop, where the model sits on the run's device and precision.
            ids, b = self.text_batch, step.input_ids.shape[0]
            caps = [ctx.engine.run(ids[i:i + b].to(step.input_ids.device), Needs.of(reductions=[ALPHA]))
                    for i in range(0, len(ids), b)]
            self.text_alpha = torch.cat([c.reductions[ALPHA] for c in caps]).double().mean(0).cpu().numpy()

    def on_checkpoint_end(self, ctx: Context) -> ProbeResult:
        alpha = self.sum / self.n
        heads = {"alpha": alpha, "is_sink": alpha > self.epsilon}
        # rate: heads whose batch-mean alpha > epsilon (docs/method.md); rate_per_seq: Gu et al.'s averaging,
        # the fraction of heads with alpha > epsilon in each sequence, averaged over sequences.
        scalars = {"rate": float((alpha > self.epsilon).mean()), "rate_per_seq": self.seq_rate / self.n}
        if self.text_alpha is not None:
            heads |= {"alpha_text": self.text_alpha, "is_sink_text": self.text_alpha > self.epsilon}
            scalars["rate_text"] = float((self.text_alpha > self.epsilon).mean())
        return ProbeResult(heads=heads, scalars=scalars, info={"text_windows": 0 if self.text_batch is None
                                                                else len(self.text_batch)})
