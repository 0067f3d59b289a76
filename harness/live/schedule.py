"""When a live run probes: a schedule of optimizer steps and a compute budget.

Both are functions of the step alone (and of the configuration), so every rank of a distributed run
agrees on them without talking: rank 0 probes, the others wait at the same steps.

    log         n log-spaced steps from 1 to the planned last step, step 0 and the last step, plus
                dense_n more inside the window where circuits are expected (0.2-3% of the planned steps)
    every:K     step 0, every K-th step and the last
    pythia      Pythia's checkpoints: step 0, powers of two to 512, then every 1000
    [s, ...]    exactly those steps

With no planned last step, `log` is step 0 and the powers of two (an unbounded log spacing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.common.errors import HarnessError

TRAIN_FORWARDS = 3  # a training step costs about three forward passes per token (forward + backward)


class ScheduleError(HarnessError, ValueError):
    pass


def _log_steps(lo: float, hi: float, n: int) -> set[int]:
    if n <= 0 or hi < lo:
        return set()
    if n == 1:
        return {round(hi)}
    a, b = math.log(lo), math.log(hi)
    return {round(math.exp(a + (b - a) * i / (n - 1))) for i in range(n)}


def steps(spec, total: int | None, *, n: int = 16, dense: tuple[float, float] = (0.002, 0.03),
          dense_n: int = 8) -> list[int] | None:
    """The scheduled steps, sorted; None for an unbounded schedule (see `Schedule.due`)."""
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(s, int) and s >= 0 for s in spec):
            raise ScheduleError(f"schedule={list(spec)}: a list of steps must be integers >= 0")
        return sorted(set(spec))
    spec = str(spec)
    if total is not None and total < 1:
        raise ScheduleError(f"total_steps={total}: must be >= 1")
    if spec.startswith("every:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise ScheduleError(f"schedule={spec}: every:K needs an integer K >= 1, e.g. every:1000")
        return None if total is None else sorted({0, total, *range(k, total + 1, k)})
    if spec == "pythia":
        last = total if total is not None else 143000
        out = {0, *(2**i for i in range(10) if 2**i <= last), *range(1000, last + 1, 1000)}
        return sorted(out | ({total} if total else set()))
    if spec == "log":
        if total is None:
            return None
        out = {0, total} | _log_steps(1, total, n)
        lo, hi = max(1.0, dense[0] * total), max(1.0, dense[1] * total)
        return sorted(out | _log_steps(lo, hi, dense_n))
    raise ScheduleError(f"schedule={spec}: unknown schedule (valid: log, every:<K>, pythia, or a list of steps)")


@dataclass
class Schedule:
    """Scheduled steps plus the budget: `max_overhead` is the most probe compute may cost as a fraction of the
    training compute so far, both counted in tokens (a probe: its forward tokens; training: TRAIN_FORWARDS x
    its tokens). A scheduled probe over budget moves to the next scheduled step; the last step always runs."""

    spec: object = "log"
    total: int | None = None
    max_overhead: float | None = None
    probe_tokens: int = 0  # forward tokens of one probe (all its batches)

    def __post_init__(self):
        self.planned = steps(self.spec, self.total)  # validates the spec; None: unbounded
        if self.max_overhead is not None and not self.max_overhead > 0:
            raise ScheduleError(f"max_overhead={self.max_overhead}: must be a fraction > 0 (e.g. 0.05) or None")
        self._due = set(self.planned or ())
        self._every = int(self.spec.split(":", 1)[1]) if str(self.spec).startswith("every:") else None
        self.spent = 0  # probe tokens so far

    def due(self, step: int) -> bool:
        if self.planned is not None:
            return step in self._due
        if self._every is not None:
            return step % self._every == 0
        return step == 0 or (step & (step - 1)) == 0  # unbounded log: 0 and the powers of two

    def last(self, step: int) -> bool:
        return self.total is not None and step >= self.total

    def overhead(self, trained_tokens: int | None, extra: int = 0) -> float | None:
        if not trained_tokens:
            return None
        return (self.spent + extra) / (TRAIN_FORWARDS * trained_tokens)

    def affordable(self, step: int, trained_tokens: int | None) -> bool:
        """Whether probing now keeps within the budget (always at the last step and without a budget)."""
        if self.max_overhead is None or self.last(step) or not trained_tokens:
            return True
        return self.overhead(trained_tokens, self.probe_tokens) <= self.max_overhead

    def spend(self) -> None:
        self.spent += self.probe_tokens
