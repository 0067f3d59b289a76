"""`python -m harness watch model=local model.repo=<run dir> [watch.interval_s=5 watch.settle_s=10 watch.idle_s=null
watch.until=null] [any override of a sweep]`: probe each checkpoint folder a training run saves, beside the run.

Polls the run folder (inotify does not fire on NFS or Lustre); a folder is loaded once it is complete and settled
(harness.sources.watching) and probed through the live core, so the store, findings, alerts and W&B run are a
sweep's (provenance `source: watch`). A folder whose result is already in the store is not probed again, so the
same command resumes. A load error while the folder still changes is retried; on a settled folder it is reported
once and retried when its files change; nothing is stored for it. Stops once step `until` is probed, after
`idle_s` without a change in the run folder, or on Ctrl-C/SIGTERM (exit 130/143), then writes the findings.
"""
from __future__ import annotations

import gc
import logging
import signal
import sys
import time
from pathlib import Path

from harness.capture import loader
from harness.common.errors import HarnessError, harness_cause
from harness.config import schema
from harness.config.compose import compose
from harness.live.prober import LiveProber
from harness.results import store
from harness.run import devices
from harness.sources import checkpoints, revisions
from harness.sources.watching import Watcher, WatchError

log = logging.getLogger("harness.watch")


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's time limit): stop as Ctrl-C does."""


def _terminate(signum, frame):
    raise Terminated


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    prober = None
    try:
        args = sys.argv[1:]
        if "model" not in {a.lstrip("+~").split("=")[0] for a in args}:
            args.insert(0, "model=local")  # a run's folder, whatever its names
        cfg = compose(args)
        schema.validate(cfg)
        schema.check_watch(cfg)
        run_folder(cfg)
        # total_steps only sizes the alerts' "% of training" (observe is forced): the step watched for is the end
        prober = LiveProber(None, overrides=args, total_steps=cfg.watch.until, source="watch", wandb="run")
        Watch(prober).run()
        prober.finish()
    except KeyboardInterrupt as e:
        term = isinstance(e, Terminated)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the findings are written once, not cut short again
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if prober is not None:
            prober.finish()
        print(f"{'terminated' if term else 'interrupted'}: probed checkpoints are stored; run the same command "
              "again to go on watching", file=sys.stderr)
        return 128 + (signal.SIGTERM if term else signal.SIGINT)
    except Exception as e:  # noqa: BLE001 - ours -> one line
        cause = harness_cause(e)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    finally:
        if prober is not None:
            prober.close()
    return 0


def run_folder(cfg) -> Path:
    """The run's folder: a path (it may not exist yet: the trainer makes it), not a hub repo."""
    repo = str(cfg.model.get("repo") or "")
    root = Path(repo).expanduser().resolve()
    if not root.is_dir() and not repo.startswith(("/", ".", "~")):
        raise WatchError(f"model.repo={repo or '???'}: watch reads a training run's checkpoint folder, e.g. "
                         "model=local model.repo=/runs/my-run; no such folder here")
    return root


class Watch:
    """The polling loop: each complete checkpoint folder of the run, once, through `prober.observe`."""

    def __init__(self, prober):
        self.prober, self.opts, self.name = prober, prober.cfg.watch, prober.name
        self.root = run_folder(prober.cfg)
        self.watcher = Watcher(self.root, settle_s=self.opts.settle_s, label=self.name)

    def run(self) -> None:
        until, idle_s = self.opts.until, self.opts.idle_s
        if not self.root.is_dir():
            log.info("%s: waiting for %s to appear", self.name, self.root)
        log.info("%s: watching %s every %ss (settle %ss%s%s)", self.name, self.root, self.opts.interval_s,
                 self.opts.settle_s, f", until step {until}" if until is not None else "",
                 f", idle {idle_s}s" if idle_s else "")
        quiet_since, last = time.monotonic(), None
        while True:
            for ready in self.watcher.poll():
                if self.handle(ready) and until is not None and ready.step >= until:
                    log.info("%s: step %d probed: stopping (watch.until=%d)", self.name, ready.step, until)
                    return
            state = tuple((n, s.fingerprint) for n, s in sorted(self.watcher.seen.items()))
            if state != last:
                quiet_since, last = time.monotonic(), state
            if idle_s and time.monotonic() - quiet_since >= idle_s:
                log.info("%s: nothing new in %s for %ss: stopping (watch.idle_s)", self.name, self.root, idle_s)
                return
            time.sleep(self.opts.interval_s)

    def handle(self, ready) -> bool:
        """Probe one settled folder (or reuse its stored result); True once its result is in the store."""
        prober, cfg = self.prober, self.prober.cfg
        out = prober.model_dir / f"step{ready.step}"
        if store.reusable(out, prober.model_cfg["repo"], None, prober.probe_hash,
                          commit=checkpoints.files_fingerprint(ready.path)):
            log.info("%s: %s already in the store (%s)", self.name, ready.name, out)
            self.watcher.done(ready)
            return True
        try:
            rev = revisions.make_revision(prober.model_cfg, ready.name)  # tokens from the name or tokens_per_step
            res = checkpoints.resolve(cfg.model, rev)
            model = loader.load(res, cfg.runner.dtype, self.name, devices.target_device(cfg.runner.device))
        except (HarnessError, OSError) as e:
            self._load_error(ready, e)
            return False
        if self.watcher.changed(ready):  # rewritten while it loaded: what was loaded may be half old, half new
            del model
            log.info("%s: %s changed while it loaded; loading it again once it settles", self.name, ready.name)
            return False
        try:
            prober.observe(model, ready.step, rev.tokens, force=True,
                           provenance={"commit": res.commit, "weights_hash": res.weights_hash, "path": str(ready.path)})
        finally:
            del model
            gc.collect()
        self.watcher.done(ready)  # observe logged it: one line per checkpoint, "step <N> probed in ..."
        return True

    def _load_error(self, ready, e: Exception) -> None:
        if self.watcher.gone(ready):
            return  # the next poll says it was rotated away, once
        if self.watcher.changed(ready):
            log.info("%s: %s is still being written; retrying once it settles", self.name, ready.name)
            return
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, HarnessError):  # ours name the model and the folder already
            why = f"{self.name}: {ready.name} cannot be loaded: {why}"
        log.warning("%s; retried when its files change", why)
        self.watcher.failed(ready)
