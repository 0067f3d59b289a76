"""Where a named revision sits in training: tokens per step by stage, the tokens a later stage starts from, what
the hub's `main` is. The preset (conf/model/*.yaml) says what the names leave out:

    tokens_per_step: 4194304              one number, or {1: 4194304, 2: 2097152, 3: 4194304} by stage
    tokens_per_checkpoint: 3500000000     ckpt_<i> names (an index, not a step)
    stage_steps: restart                  later stages count steps from 0 again (OLMo-2/3); `continue`: SmolLM3
    stage_tokens: {1: 5930000000000}      a stage's length, where the last revision of it is not the end
    main: end | annealed | no-weights     the hub's main (with main_step: the step main equals)
"""
from __future__ import annotations

from harness.sources import names as naming

MAIN_KINDS = ("end", "annealed", "no-weights")
STAGE_STEPS = ("restart", "continue")


def main_kind(model_cfg) -> str | None:
    """What the hub's `main` is: the end of pretraining (`end`, an alias of main_step where that is set), an
    annealed or souped model off the trajectory (`annealed`), or a branch without weights (`no-weights`);
    None: not said (then main has no step and no default grid picks it)."""
    kind = model_cfg.get("main")
    if kind is None and model_cfg.get("main_step") is not None:
        return "end"
    return kind


def tokens_per_step(model_cfg, stage: int | None):
    """A stage's tokens per step (unstaged names count as stage 1)."""
    tps = model_cfg.get("tokens_per_step")
    if hasattr(tps, "get"):
        stage = stage or 1
        return tps.get(stage, tps.get(str(stage)))
    return tps


def restarts(model_cfg) -> bool:
    return (model_cfg.get("stage_steps") or "restart") == "restart"


def in_stage_tokens(model_cfg, n: naming.Name) -> tuple[int | None, str | None]:
    """(tokens since the start of the name's stage, a warning where the name's own count disagrees)."""
    per_ckpt = model_cfg.get("tokens_per_checkpoint")
    tps = tokens_per_step(model_cfg, n.stage)
    if n.index and per_ckpt:
        tokens = (n.step + 1) * per_ckpt  # LLM360 saves ckpt_000 after the first of its data chunks
    else:
        tokens = n.step * tps if n.step is not None and tps else None
    if n.btokens is None:
        return tokens, None
    if tokens is None:
        return n.btokens * 10**9, None  # no tokens_per_step: trust the name
    # OLMo-1 names floor the billions, OLMo-2 names round them up: allow a whole billion plus ~2% drift.
    if abs(tokens / 1e9 - n.btokens) > 1 + 0.02 * n.btokens:
        return tokens, (f"names {n.btokens}B tokens but step x tokens_per_step = {tokens / 1e9:.1f}B; "
                        "check model.tokens_per_step")
    return tokens, None


def stage_starts(model_cfg, parsed: dict[str, naming.Name]) -> dict[int, int | None]:
    """Tokens trained before each later stage whose step count restarts (OLMo-2 stage 2, OLMo-3 stages 2 and 3):
    the earlier stages' lengths added up, each from the preset's stage_tokens or else from that stage's last
    revision in `parsed`. Ingredients branch from one start, so a stage lasts as long as its longest branch.
    None where an earlier stage's length is unknown."""
    stages = {n.stage or 1 for n in parsed.values() if n.step is not None}
    if not restarts(model_cfg) or max(stages, default=1) <= 1:
        return {}
    given = {int(k): v for k, v in (model_cfg.get("stage_tokens") or {}).items()}
    seen: dict[int, int] = {}
    for n in parsed.values():
        tokens = in_stage_tokens(model_cfg, n)[0] if n.step is not None else None
        if tokens is not None:
            seen[n.stage or 1] = max(seen.get(n.stage or 1, 0), tokens)
    starts: dict[int, int | None] = {}
    start: int | None = 0
    for stage in range(1, max(stages)):
        length = given.get(stage, seen.get(stage))
        start = None if start is None or length is None else start + length
        starts[stage + 1] = start
    return starts


def tokens(model_cfg, n: naming.Name, starts: dict[int, int | None] | None) -> tuple[int | None, str | None]:
    """(tokens since the start of training, a warning): a later stage's in-stage tokens placed after the earlier
    stages' (without `starts` from the whole list, only the preset's stage_tokens can place them)."""
    t, warning = in_stage_tokens(model_cfg, n)
    if (n.stage or 1) > 1 and restarts(model_cfg) and t is not None:
        start = (stage_starts(model_cfg, {"": n}) if starts is None else starts).get(n.stage)
        t = None if start is None else start + t
    return t, warning
