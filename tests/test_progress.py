"""One progress bar per job (harness.run.progress), and nothing changed in the user's process at import."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from test_e2e import ROOT, common, save_revisions


def harness_bytes(*overrides):
    """stderr as bytes: a text-mode pipe would turn tqdm's carriage returns into newlines."""
    return subprocess.run([sys.executable, "-m", "harness", *overrides], cwd=ROOT, capture_output=True,
                          env={**os.environ, "WANDB_SILENT": "true"}, timeout=600)


def bar_lines(stderr: bytes, name: str) -> list[list[str]]:
    """Each bar line on stderr (ended by a newline), as the states tqdm drew over it (carriage returns)."""
    lines = stderr.decode(errors="replace").split("\n")
    return [[s for s in line.split("\r") if s.startswith(f"{name}:")] for line in lines if f"{name}:" in line]


def test_one_bar_per_job_over_its_revisions(tmp_path):
    ckpts = tmp_path / "ckpts"
    save_revisions("gpt_neox", ckpts)  # step0, step2, step6
    args = [a for a in common(tmp_path, ckpts, "tiny", probe="selectivity") if not a.startswith("runner.progress")]
    proc = harness_bytes(*args, "logger=none", "runner.progress_bar=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert "Predicting" not in out  # Lightning's bar, one per revision, is off
    (bar,) = bar_lines(proc.stderr, "tiny")  # one bar line for the whole job
    assert all("/3 [" in state for state in bar), bar  # revisions done of the job's 3
    assert "3/3" in bar[-1] and "100%" in bar[-1]
    shown = {rev for state in bar for rev in ("step0", "step2", "step6") if state.rstrip().endswith(f", {rev}]")}
    assert shown == {"step0", "step2", "step6"}, bar  # the revision at work, in the postfix
    assert any("<" in state and "rev" in state for state in bar)  # elapsed<remaining, rate
    assert "tiny: 3 revisions x 1 probes" in out and "results:" in out  # the job's log and summary as they were

    again = harness_bytes(*args, "logger=none", "runner.progress_bar=true")  # every revision reused
    assert again.returncode == 0, again.stderr[-3000:]
    (bar,) = bar_lines(again.stderr, "tiny")
    assert bar and all("3/3" in state for state in bar), bar  # reused revisions count as done
    assert "reusing" in (again.stdout + again.stderr).decode()

    off = harness_bytes(*args, "logger=none", "runner.progress_bar=false")
    assert off.returncode == 0 and not bar_lines(off.stderr, "tiny") and b"Predicting" not in off.stdout + off.stderr


def test_importing_the_job_changes_nothing_in_the_process():
    """Lightning's logger levels, the warning filters, transformers' progress bars and OmegaConf's resolvers are the
    user's: the job sets
    them only while it loads or runs a checkpoint. Third-party packages are imported first (Lightning sets its own
    logger's level when imported), so only our modules' import is measured."""
    script = textwrap.dedent("""
        import logging, warnings
        import lightning, lightning.pytorch, torch, transformers, hydra, omegaconf, pandas, tqdm
        try:
            import accelerate  # sets a warning filter when imported (transformers imports it when installed)
        except ImportError:
            pass
        from transformers.utils import logging as hf_logging
        NAMES = ("lightning.pytorch", "lightning.fabric", "lightning")
        def state():
            return ([logging.getLogger(n).level for n in NAMES], list(warnings.filters),
                    hf_logging.is_progress_bar_enabled(), omegaconf.OmegaConf.has_resolver("seeded"))
        before = state()
        import harness, harness.api, harness.run.job, harness.run.loop, harness.capture.loader  # noqa: F401
        after = state()
        assert before == after, (before, after)
        print("unchanged", before[0], len(before[1]), before[2])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "unchanged" in proc.stdout, proc.stderr[-3000:]


def test_checkpoint_run_leaves_loggers_and_warnings_alone():
    """The probe loop is a plain loop (no Lightning Trainer): a checkpoint run sets no logger level and no warning
    filter, so it can run inside someone's training job."""
    import logging
    import warnings
    from types import SimpleNamespace

    from conftest import tiny_model

    from harness.capture.arch import head_layout
    from harness.capture.batches import induction_batch
    from harness.run import loop
    from probes.base import Context
    from probes.selectivity import Selectivity

    model = tiny_model("olmo")
    batch = induction_batch(n=8, seq_len=64, vocab_lo=5, vocab_hi=97)
    ctx = Context(head_layout(model.config), batch, {"name": "tiny"}, "r")
    levels = {n: logging.getLogger(n).level for n in ("", "lightning.pytorch", "transformers", "harness")}
    filters = list(warnings.filters)
    res = loop.run_checkpoint(model, loop.group_by_batch([Selectivity()], batch, ctx), model_cfg={"name": "tiny"},
                              revision="r", runner=SimpleNamespace(batch_size=4, device="cpu", dtype="float32"))
    assert "selectivity" in res
    assert levels == {n: logging.getLogger(n).level for n in levels} and warnings.filters == filters
