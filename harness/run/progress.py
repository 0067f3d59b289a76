"""One progress bar per job, on stderr: revisions done of the job's total, the revision at work, the ETA.

    zoo-neox:  50%|█████     | 3/6 [00:12<00:12,  4.10s/rev, step4]

Revisions reused from the store without a download count as done from the start (so the ETA is the time of the
revisions still to probe); one reused after waiting for another job's lock advances it like a probed one. While
the bar is shown on a terminal, log lines are written above it (tqdm's logging redirect), so the job's log stays
as it was.
`runner.progress_bar=false` turns it off.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


class JobBar:
    def __init__(self, model: str, total: int, reused: Iterable[str] = (), enabled: bool = True):
        self.reused = set(reused)
        self.bar = tqdm(total=total, initial=len(self.reused), desc=model, unit="rev", file=sys.stderr,
                        disable=not enabled, dynamic_ncols=True)
        self._redirect = contextlib.ExitStack()
        if enabled and sys.stderr.isatty():  # a terminal: log lines above the bar, not through it
            self._redirect.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))

    def over(self, revisions: Iterable) -> Iterator:
        """The revisions, each shown while the loop body works on it and counted when the body is done with it."""
        for rev in revisions:
            if rev.name in self.reused:  # already counted
                yield rev
                continue
            self.bar.set_postfix_str(rev.name)
            yield rev
            self.bar.update(1)

    def close(self) -> None:
        """Idempotent: the bar's last state stays on screen, and log lines go straight to their handlers again."""
        if self.bar.n >= (self.bar.total or 0):
            self.bar.set_postfix_str("", refresh=False)  # done: no revision at work
        self.bar.close()
        self._redirect.close()
