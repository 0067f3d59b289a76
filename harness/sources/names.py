"""What a revision's name says: its training stage, ingredient, step (or checkpoint index) and token count.

The suites people study name their checkpoints in a dozen ways; one parser reads them all:

    step1000, step1000-tokens2B             Pythia, OLMo-1 (tokens floored), OLMo-2 unstaged (tokens rounded up)
    stage1-step140000-tokens294B            OLMo-2; stage 2 restarts the step count
    stage2-ingredient1-step11931-tokens50B  OLMo-2 stage 2: parallel branches ("ingredients") from one start
    stage1-step1413814, stage3-step11921    OLMo-3 (no tokens in the name)
    stage1-step-40000                       SmolLM3 (its step count runs on across stages)
    step-001000-2BT                         FineWeb ablation models
    ckpt_042                                LLM360 (an index: the 43rd saved checkpoint, not a step)
    checkpoint-1000                         HF Trainer output, CRFM GPT-2 (git tags)
    global_step1000, iter-1000, step-1000   DeepSpeed, lit-gpt, SmolLM2
    1000                                    a bare number: a step

A name none of these match (main, final) has no step: it sorts last and no step-based grid picks it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS = (
    re.compile(r"^stage(?P<stage>\d+)-(?:ingredient(?P<ingredient>\d+)-)?step[-_]?(?P<step>\d+)"
               r"(?:-tokens(?P<btokens>\d+)B)?$", re.IGNORECASE),
    re.compile(r"^step-(?P<step>\d+)-(?P<btokens>\d+)BT$", re.IGNORECASE),
    re.compile(r"^ckpt_(?P<index>\d+)$", re.IGNORECASE),
    re.compile(r"^(?:step|checkpoint|ckpt|global_step|iter)?[-_]?(?P<step>\d+)(?:-tokens(?P<btokens>\d+)B)?$",
               re.IGNORECASE),
)


@dataclass(frozen=True)
class Name:
    step: int | None = None  # the number in the name: a step, or the checkpoint index where `index` is true
    btokens: int | None = None  # billions of tokens the name states (rounded either way by the suite)
    stage: int | None = None  # None: the name has no stage (pretraining, as stage 1)
    ingredient: int | None = None  # a parallel branch within a stage
    index: bool = False  # ckpt_<i>: the i-th checkpoint saved, whatever the step


def parse(name: str) -> Name:
    for pattern in _PATTERNS:
        m = pattern.match(str(name))
        if m:
            g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
            if "index" in g:
                return Name(step=g["index"], index=True)
            return Name(g["step"], g.get("btokens"), g.get("stage"), g.get("ingredient"))
    return Name()


# ---------------------------------------------------------------- known schedules -> names

def _steps(spec, what: str) -> list[int]:
    kind = spec.get("kind")
    if kind == "pythia":  # step0, powers of two to 512, then every 1000 to the end
        last = spec.get("last", 143000)
        return [0] + [2**i for i in range(10)] + list(range(1000, last + 1, 1000))
    if kind == "every":
        every, last = spec["every"], spec["last"]
        return list(range(spec.get("first", every), last + 1, every)) + list(spec.get("extra") or [])
    raise ValueError(f"{what}: unknown schedule kind '{kind}' (valid: pythia, every, parts)")


def schedule_names(spec, tokens_per_step, what: str) -> list[str]:
    """A known checkpoint schedule as revision names, in schedule order.

    `{kind: pythia}`, `{kind: every, every: 1000, last: 9000, first: 0, extra: [...]}`, each with a name template
    (`name: "step{step}-tokens{btokens}B"`; {btokens} floors step x tokens_per_step to billions, {btokens_up} rounds
    it up) and `rename: {step: name}` for names that break the rule; `{kind: parts, parts: [spec, ...]}` joins
    several, e.g. one per training stage (`stage: k` picks that stage's tokens per step) or per spacing.
    `tokens_per_step(stage)` gives a stage's tokens per step (None: unknown)."""
    if not spec:
        return []
    if spec.get("kind") == "parts":
        return [n for part in spec.get("parts") or [] for n in schedule_names(part, tokens_per_step, what)]
    steps = sorted(set(_steps(spec, what)))
    template = spec.get("name", "step{step}")
    tps = tokens_per_step(spec.get("stage")) or 0
    rename = {int(k): v for k, v in (spec.get("rename") or {}).items()}
    return [rename.get(s) or template.format(step=s, btokens=s * tps // 10**9, btokens_up=-(-s * tps // 10**9))
            for s in steps]
