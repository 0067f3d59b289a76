"""A new probe is one Python file plus one yaml, both written here to a temp folder (a copy of conf/): `probe=all`
finds it, the job runs it with no edit to the harness, its columns reach the store, and the findings read the
column it declares for a standard role."""
from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from test_e2e import save_revisions

from harness.common.paths import CONF_DIR
from harness.run import job

# The README's example shape: no `name` argument (the harness names a probe after its yaml key).
PROBE = '''
import numpy as np

from harness.capture.engine import Needs
from probes.base import Probe, ProbeResult


class RowEntropy(Probe):
    """Entropy of the last query's attention row, per head."""

    columns = ("entropy",)
    signals = {"pr": "entropy"}  # stands in for the PR that F5 compares with the induction crossing

    def needs(self, batch):
        return Needs.of(rows=[-1])

    def on_checkpoint_start(self, ctx):
        self.total, self.n = 0.0, 0

    def on_batch(self, step, ctx):
        row = step.capture.rows[-1].double().cpu().numpy()  # (B, L, H, T)
        self.total = self.total + (-(row * np.log(np.clip(row, 1e-30, None))).sum(-1)).sum(0)
        self.n += len(row)

    def on_checkpoint_end(self, ctx):
        return ProbeResult(heads={"entropy": self.total / self.n})
'''


def test_a_probe_in_a_temp_folder_runs_end_to_end(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "probe" / "row_entropy.yaml").write_text("row_entropy:\n  _target_: my_probes.RowEntropy\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_probes.py").write_text(textwrap.dedent(PROBE))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    save_revisions("olmo", tmp_path / "ckpts", steps=(0, 4))
    args = ["model=local", f"model.repo={tmp_path / 'ckpts'}", "model.name=tiny", "model.batch.vocab_lo=5",
            "model.batch.vocab_hi=97", "model.batch.seq_len=64", "model.bos_id=0", "data.n=40", "runner.device=cpu",
            "runner.progress_bar=false", "runner.dtype=float32", f"paths.root_dir={tmp_path}", "logger=none"]
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert "row_entropy" in compose("config", overrides=["probe=all"]).probe  # discovered, no list edited
        cfg = compose("config", overrides=[*args, "probe=[selectivity,row_entropy]"])
    job.run(cfg)

    model_dir = tmp_path / "results" / "default" / "tiny"
    heads = pd.read_parquet(model_dir / "step4" / "heads.parquet")
    ent = heads["row_entropy.entropy"].to_numpy()
    assert np.isfinite(ent).all() and (ent > 0).all()
    summary = json.loads((model_dir / "step4" / "summary.json").read_text())
    assert summary["signals"]["pr"] == "row_entropy.entropy"
    assert summary["provenance"]["probe_versions"] == {"selectivity": 1, "row_entropy": 1}
    findings = json.loads((model_dir / "findings.json").read_text())
    assert findings["signals"]["pr"] == "row_entropy.entropy"  # F5 reads the declared column


def test_reuse_needs_the_same_probe_options_and_versions(tmp_path, monkeypatch):
    """A stored result is reused only for the same probe options and the same probe code version."""
    from probes.selectivity import Selectivity

    save_revisions("gpt_neox", tmp_path / "ckpts", steps=(0,))
    args = ["model=local", f"model.repo={tmp_path / 'ckpts'}", "model.name=tiny", "model.batch.vocab_lo=5",
            "model.batch.vocab_hi=97", "model.batch.seq_len=64", "model.bos_id=0", "data.n=20", "runner.device=cpu",
            "runner.progress_bar=false", "runner.dtype=float32", f"paths.root_dir={tmp_path}", "logger=none",
            "probe=selectivity"]
    summary = tmp_path / "results" / "default" / "tiny" / "step0" / "summary.json"

    def run(*extra) -> int:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            job.run(compose("config", overrides=[*args, *extra]))
        return summary.stat().st_mtime_ns

    first = run()
    assert run() == first  # same options, same code: reused
    changed_option = run("+probe.selectivity.eps=1e-7")
    assert changed_option != first
    monkeypatch.setattr(Selectivity, "version", Selectivity.version + 1)  # a fix that changes the numbers
    assert run("+probe.selectivity.eps=1e-7") != changed_option
    assert json.loads(summary.read_text())["provenance"]["probe_versions"] == {"selectivity": 2}


def test_one_threshold_override_reaches_columns_findings_and_both_reports(tmp_path):
    """`thresholds.induction` set once: the probe's per-revision columns and counts, the findings, the HTML report
    and the W&B report's panels all classify heads with it."""
    from harness.report import wandb_report
    from harness.report.collect import collect
    from harness.report.html import build_html

    save_revisions("gpt_neox", tmp_path / "ckpts", steps=(0, 2, 6))
    args = ["model=local", f"model.repo={tmp_path / 'ckpts'}", "model.name=tiny", "model.batch.vocab_lo=5",
            "model.batch.vocab_hi=97", "model.batch.seq_len=64", "model.bos_id=0", "data.n=40", "runner.device=cpu",
            "runner.progress_bar=false", "runner.dtype=float32", f"paths.root_dir={tmp_path}", "logger=none",
            "probe=selectivity", "thresholds.induction=1.25"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        job.run(compose("config", overrides=args))
    model_dir = tmp_path / "results" / "default" / "tiny"
    counts = []
    for step in (0, 2, 6):
        heads = pd.read_parquet(model_dir / f"step{step}" / "heads.parquet")
        circuit = heads["selectivity.induction_circuit"].to_numpy()
        np.testing.assert_array_equal(circuit, heads["selectivity.induction"].to_numpy() >= 1.25)
        scalars = json.loads((model_dir / f"step{step}" / "summary.json").read_text())["scalars"]
        assert scalars["selectivity.n_induction"] == circuit.sum()
        counts.append(int(circuit.sum()))
    assert any(0 < c < 16 for c in counts), counts  # the threshold splits the heads: the check can fail

    models = collect(tmp_path / "results", "default")
    findings = models["tiny"][0]
    assert findings["n_induction"] == counts and findings["thresholds"]["induction"] == 1.25
    assert "induction-circuit heads (>= 1.25x)" in build_html(models, "t").replace("\\u003e", ">")
    panels = wandb_report.history({"tiny": findings})
    assert ("selectivity.n_induction", "induction-circuit heads (>= 1.25x)", False) in panels
