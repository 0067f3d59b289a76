"""Alerts of a live run: each event once, to `<model>/alerts.jsonl` (always), the console and W&B (`run.alert`).

Events, read from the findings the analysis has just written (the same rules as a sweep's findings):
    induction_circuit   the first induction-circuit heads (which, their selectivities, when)
    circuit_stable      the same circuit heads at `stable_k` probes in a row: the early screen's final circuit
    bos_heads           the first BOS-classified heads
    head_lost:<head>    a head of the circuit drops below the threshold again
    probe_failed:<rev>  a probe gave non-finite values (with the dtype advice)
The file is the memory: after a crash and resume, an event already in it is not sent again.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from harness.common import files
from harness.common.units import human

log = logging.getLogger("harness.live")


class Alerts:
    def __init__(self, model_dir: Path, model: str, *, total_steps: int | None = None, stable_k: int = 3,
                 echo=print):
        self.path = Path(model_dir) / "alerts.jsonl"
        self.model, self.total, self.stable_k, self.echo = model, total_steps, stable_k, echo
        self.sent: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    a = json.loads(line)
                except ValueError:  # a line cut by a crash mid-write: that event is sent again
                    continue
                self.sent[a["event"]] = a
        self.runs = []  # W&B runs that get alerts (our own run, when there is one)

    def _where(self, step, tokens) -> str:
        parts = [f"step {step}"]
        if tokens:
            parts.append(f"{human(tokens)} tokens")
        if self.total and step is not None:
            parts.append(f"{100 * step / self.total:.3g}% of training")
        return ", ".join(parts)

    def send(self, event: str, title: str, text: str, *, step=None, tokens=None, level: str = "INFO", **data):
        if event in self.sent:
            return False
        record = {"event": event, "title": title, "text": text, "model": self.model, "step": step,
                  "tokens": tokens, "level": level, "time": time.time(), **data}
        lines = (self.path.read_text() if self.path.is_file() else "") + json.dumps(record) + "\n"
        files.write_text(self.path, lines)
        self.sent[event] = record
        self.echo(f"{self.model}: {text}")
        for run in self.runs:
            try:
                run.alert(title=title[:63], text=text, level=level)
            except Exception as e:  # noqa: BLE001 - W&B down: alerts.jsonl holds it
                log.warning("wandb alert not sent (%s); it is in %s", type(e).__name__, self.path)
        return True

    def check(self, findings: dict, heads_by_rev: dict[str, list[tuple[str, float]]], step, tokens) -> list[str]:
        """Send what the latest findings show for the first time. `heads_by_rev`: each revision's circuit heads
        with their induction selectivities, in revision order."""
        sent = []
        revs = list(heads_by_rev)
        # The circuit forms when its first heads cross the induction threshold (the milestones count 3, 5, ...).
        hit = next((i for i, n in enumerate(findings.get("n_induction", [])) if n), None)
        first = None if hit is None else {"revision": findings["revisions"][hit], "step": findings["steps"][hit],
                                          "tokens": findings["tokens"][hit]}
        if first is not None:
            heads = heads_by_rev.get(first["revision"], [])
            shown = ", ".join(f"{h} {s:.0f}x" for h, s in heads)
            if self.send("induction_circuit", "Induction circuit formed",
                         f"induction circuit at {self._where(first['step'], first['tokens'])}: {shown}",
                         step=first["step"], tokens=first["tokens"], heads=[h for h, _ in heads]):
                sent.append("induction_circuit")
        sets = [frozenset(h for h, _ in heads_by_rev[r]) for r in revs]
        k = self.stable_k
        if first is not None and len(sets) >= k and sets[-1] and all(s == sets[-1] for s in sets[-k:]):
            if self.send("circuit_stable", "Induction circuit stable",
                         f"induction circuit stable for {k} probes at {self._where(step, tokens)}: "
                         f"{', '.join(sorted(sets[-1]))} (the early screen's prediction of the final circuit)",
                         step=step, tokens=tokens, heads=sorted(sets[-1])):
                sent.append("circuit_stable")
        bos_counts = [sum(row) for row in findings.get("bos_layer_counts", [])]
        hit = next((i for i, n in enumerate(bos_counts) if n), None)
        if hit is not None:
            r = findings["revisions"][hit]
            if self.send("bos_heads", "First BOS heads",
                         f"first BOS heads ({bos_counts[hit]}) at "
                         f"{self._where(findings['steps'][hit], findings['tokens'][hit])}",
                         step=findings["steps"][hit], tokens=findings["tokens"][hit], revision=r):
                sent.append("bos_heads")
        if first is not None and len(sets) >= 2:
            for h in sorted(sets[-2] - sets[-1]):
                if self.send(f"head_lost:{h}", "Circuit head lost",
                             f"circuit head {h} lost at {self._where(step, tokens)}",
                             step=step, tokens=tokens, level="WARN", head=h):
                    sent.append(f"head_lost:{h}")
        return sent

    def failed(self, revision: str, reason: str, suggestion: str, step, tokens) -> None:
        self.send(f"probe_failed:{revision}", "Probe failed",
                  f"probe failed at {self._where(step, tokens)}: {reason}; try {suggestion}",
                  step=step, tokens=tokens, level="ERROR")

