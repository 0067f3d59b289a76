"""Bad input: one line on stderr, exit 2, before any checkpoint is loaded, the result store as it was."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
from annotated_types import Ge, Gt, Interval
from conftest import tiny_model
from hydra import compose, initialize_config_dir
from test_e2e import common, harness

from harness.config import schema

CONF = Path(__file__).resolve().parents[1] / "conf"


def validate(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    schema.validate(cfg)


@pytest.mark.parametrize("overrides", [
    [], ["probe=all"], ["experiment=paper", "model=pythia-1b"], ["experiment=zoo"], ["runner=gpu"],
    ["runner.batch_size=8", "runner.device=cuda:1", "data=induction_bos"],
])
def test_shipped_configs_pass(overrides):
    validate(*overrides)


@pytest.mark.parametrize("overrides,message", [
    (["runner.batch_size=-3"], 'runner.batch_size=-3: must be an integer >= 1 or "auto"'),
    (["runner.batch_size=1.5"], 'runner.batch_size=1.5: must be an integer >= 1 or "auto"'),
    (["runner.dtype=fp8"], "runner.dtype=fp8: must be float32, float16 or bfloat16"),
    (["runner.device=tpu"], "runner.device=tpu: must be cpu, cuda, cuda:<N>, gpu, mps or auto"),
    (["runner.progress_bar=maybe"], "runner.progress_bar=maybe: must be true or false"),
    (["data.n=0"], "data.n=0: must be an integer >= 1"),
    (["data.vocab_lo=x"], "data.vocab_lo=x: must be an integer >= 0"),
    (["probe.selectivity.induction=abc"], "probe.selectivity.induction=abc: must be a number > 0 (default 50.0)"),
    (["probe=all", "probe.null.draws=2.5"], "probe.null.draws=2.5: must be an integer >= 1 (default 500)"),
    (["probe=all", "probe.pr.n=abc"], "probe.pr.n=abc: must be an integer >= 1 or null"),
    (["probe=all", "probe.pr.positions=first"], "probe.pr.positions=first: must be one of last, all"),
    (["probe=all", "probe.ablation.per_head=2"], "probe.ablation.per_head=2: must be true or false or null"),
    (["probe=all", "probe.induction_score.lengths=[50,x]"], "probe.induction_score.lengths[1]=x: must be an integer"),
    (["+probe.selectivity.indction=3"], "probe.selectivity.indction=3: unknown option of Selectivity; did you mean "
                                        "induction?"),
    (["thresholds.induction=x"], "thresholds.induction=x: must be a number > 0"),
    (["+thresholds.inducton=40"], "thresholds.inducton=40: no probe reads this threshold; did you mean induction? "
                                  "(valid: assign, induction, prev_token, bos, sink_regime)"),
    (["+analysis.induction=40"], "analysis.induction=40: head-class thresholds are set once for probes and findings: "
                                "thresholds.induction=40"),
    (["analysis.bos_fractions=[0.1,2]"], "analysis.bos_fractions[1]=2: must be a number between 0 and 1"),
    (["experiment_name=../elsewhere"], "experiment_name=../elsewhere: must be a plain folder name"),
    (["experiment_name=/abs"], "experiment_name=/abs: must be a plain folder name"),
    (["model.name=.."], "model.name=..: must be a plain folder name"),
    (["model=local"], "model.repo: Missing mandatory value"),
    # the ends of a range, in any section: in order
    (["revisions.min_step=8", "revisions.max_step=2"], "revisions.min_step=8: must be <= revisions.max_step=2 "
                                                         "(an empty range)"),
    (["data.vocab_lo=30", "data.vocab_hi=20"], "data.vocab_lo=30: must be < data.vocab_hi=20 (an empty range)"),
    (["model.batch.vocab_lo=30", "model.batch.vocab_hi=30"], "model.batch.vocab_lo=30: must be < "
                                                             "model.batch.vocab_hi=30"),
    # counts that must be positive, fractions and percentiles in their range, floors above 0
    (["data.n_baseline=0"], "data.n_baseline=0: must be an integer >= 1 (default 50)"),
    (["probe=all", "probe.null.draws=0"], "probe.null.draws=0: must be an integer >= 1 (default 500)"),
    (["probe=all", "probe.null.percentile=120"], "probe.null.percentile=120: must be a number between 0 and 100"),
    (["probe=all", "probe.pr.n=0"], "probe.pr.n=0: must be an integer >= 1 or null"),
    (["probe=all", "probe.induction_score.lengths=[50,0]"], "probe.induction_score.lengths[1]=0: must be an integer "
                                                             ">= 1"),
    (["probe=all", "probe.previous_token.n=0"], "probe.previous_token.n=0: must be an integer >= 1 (default 100)"),
    (["probe=all", "probe.duplicate_token.threshold=2"], "probe.duplicate_token.threshold=2: must be a number "
                                                          "between 0 and 1"),
    (["probe=all", "probe.sink.text_n=0"], "probe.sink.text_n=0: must be an integer >= 1 (default 32)"),
    (["probe=all", "probe.sink.text_len=1"], "probe.sink.text_len=1: must be an integer >= 2 (default 64)"),
    (["probe=all", "probe.sink.epsilon=3"], "probe.sink.epsilon=3: must be a number between 0 and 1"),
    (["probe=all", "probe.ablation.n_random=0"], "probe.ablation.n_random=0: must be an integer >= 1 (default 5)"),
    (["probe.selectivity.sink_regime=5"], "probe.selectivity.sink_regime=5: must be a number between 0 and 1"),
    (["+probe.selectivity.eps=0"], "probe.selectivity.eps=0: must be a number > 0"),
    (["analysis.induction_counts=[0,3]"], "analysis.induction_counts[0]=0: must be an integer >= 1"),
    (["analysis.sharp_share=2"], "analysis.sharp_share=2: must be a number between 0 and 1"),
    (["analysis.pr_factor=0"], "analysis.pr_factor=0: must be a number > 0"),
    (["analysis.recall=[1/3,x]"], "analysis.recall[1]=x: must be a fraction in (0, 1], e.g. 1/3"),
    # the sections that had no schema: the revision grid, the model, the logger
    (["revisions=log", "revisions.n=1"], "revisions.n=1: must be an integer >= 2 (the first and the last"),
    (["revisions=log", "revisions.n=abc"], "revisions.n=abc: must be an integer >= 2"),
    (["revisions.select=foo"], "revisions.select=foo: must be one of all, final, paper, log, list"),
    (["revisions=list"], "revisions.names=[]: revisions=list needs names, e.g. 'revisions.names=[step1,step8]'"),
    (["+revisions.min_step=abc"], "revisions.min_step=abc: must be an integer >= 0 or null"),
    (["+revisions.min_stp=3"], "revisions.min_stp=3: unknown option; did you mean min_step? (valid: select, n, names, "
                               "min_step, max_step, shard, only)"),
    (["model.tokens_per_step=-5"], "model.tokens_per_step=-5: must be an integer >= 1, a mapping {stage: tokens per step} "
                                   "(e.g. {1: 4194304, 2: 2097152}) or null"),
    (["model.arch=bloom"], "model.arch=bloom: must be one of auto, gpt_neox, olmo, olmoe, llama"),
    (["model.batch=5"], "model.batch=5: must be a mapping of seq_len, vocab_lo, vocab_hi, bos"),
    (["+model.tokenzer=x"], "model.tokenzer=x: unknown option; did you mean tokenizer? (valid: name, repo, "),
    (["logger.mode=onlin"], "logger.mode=onlin: must be one of auto, online, offline, disabled"),
    (["+logger.projct=x"], "logger.projct=x: unknown option of Tracker; did you mean project? (valid: project, "),
])
def test_bad_option_is_one_line(overrides, message):
    with pytest.raises(schema.ConfigError) as e:
        validate(*overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_new_probe_is_checked_from_its_signature():
    class Toy:  # any plug-in: its defaults say the types; a None default or a choice, its annotation
        def __init__(self, name=None, level=0.5, count=3, flag=True, names=("a",), limit: int | None = None,
                     mode: Literal["fast", "exact"] = "fast"):
            pass

    schema.check_signature("probe.toy", Toy, {"level": 2, "count": 0, "flag": False, "names": ["b"], "limit": None,
                                              "mode": "exact"})
    schema.check_signature("probe.toy", Toy, {"limit": 7})
    for key, bad in (("level", "high"), ("count", -1), ("flag", 1), ("other", 1), ("limit", "abc"), ("limit", 1.5),
                     ("mode", "slow")):
        with pytest.raises(schema.ConfigError, match=rf"^probe\.toy\.{key}="):
            schema.check_signature("probe.toy", Toy, {key: bad})


class Ranged:  # a new plug-in that states its ranges in its signature (annotated-types, as pydantic uses them)
    def __init__(self, n: Annotated[int, Ge(1)] = 10, share: Annotated[float, Interval(ge=0, le=1)] = 0.5,
                 eps: Annotated[float, Gt(0)] = 1e-8, sizes: tuple[Annotated[int, Ge(2)], ...] = (4, 8),
                 offset: Annotated[int, Ge(-3)] = 0, limit: Annotated[int, Ge(1)] | None = None):
        pass


def test_new_probe_states_its_ranges_in_its_signature():
    schema.check_signature("probe.toy", Ranged, {"n": 1, "share": 1.0, "eps": 0.1, "sizes": [2], "offset": -3,
                                                 "limit": None})
    for key, bad, message in (
            ("n", 0, "must be an integer >= 1 (default 10)"), ("share", 1.5, "must be a number between 0 and 1"),
            ("eps", 0, "must be a number > 0"), ("sizes", [4, 1], "must be an integer >= 2"),
            ("offset", -4, "must be an integer >= -3"), ("limit", 0, "must be an integer >= 1 or null")):
        with pytest.raises(schema.ConfigError) as e:
            schema.check_signature("probe.toy", Ranged, {key: bad})
        assert message in str(e.value) and str(e.value).startswith(f"probe.toy.{key}")


def test_range_ends_are_ordered_in_any_section():
    schema.check_ranges("probe.toy", {"vocab_lo": 0, "vocab_hi": 1, "min_len": 5, "max_len": 5, "x": {"lo": 1,
                                                                                                    "hi": 2}})
    for values, message in (({"vocab_lo": 3, "vocab_hi": 3}, "probe.toy.vocab_lo=3: must be < probe.toy.vocab_hi=3"),
                            ({"min_len": 6, "max_len": 5}, "probe.toy.min_len=6: must be <= probe.toy.max_len=5"),
                            ({"t_min": 2, "t_max": 1}, "probe.toy.t_min=2: must be <= probe.toy.t_max=1"),
                            ({"x": {"lo": 2, "hi": 1}}, "probe.toy.x.lo=2: must be < probe.toy.x.hi=1")):
        with pytest.raises(schema.ConfigError, match="^" + re.escape(message)):
            schema.check_ranges("probe.toy", values)


def snapshot(folder: Path) -> dict:
    """The result store and the checkpoints (Hydra's run log under logs/ is expected to grow)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for sub in ("results", "ckpts", "wandb_runs") for p in sorted((folder / sub).rglob("*"))}


@pytest.fixture(scope="module")
def unloadable(tmp_path_factory):
    """A checkpoint folder whose weights cannot be loaded (truncated): a job that got as far as loading it
    would fail with "cannot load", not with the message under test. And a store with an earlier result."""
    tmp = tmp_path_factory.mktemp("bad")
    tiny_model("gpt_neox").save_pretrained(tmp / "ckpts" / "step0")
    weights = tmp / "ckpts" / "step0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    old = tmp / "results" / "default" / "tiny" / "step0"
    old.mkdir(parents=True)
    (old / "summary.json").write_text('{"earlier": true}')
    return tmp


DEVICE_CASES = [(d, f"runner.device={d}: ") for d, there in (("cuda", torch.cuda.is_available()),
                                                           ("mps", torch.backends.mps.is_available())) if not there]


@pytest.mark.parametrize("override,message", [
    ("runner.batch_size=-3", 'error: runner.batch_size=-3: must be an integer >= 1 or "auto"'),
    ("probe.selectivity.induction=abc", "error: probe.selectivity.induction=abc: must be a number"),
    ("experiment_name=../../escape", "error: experiment_name=../../escape: must be a plain folder name"),
    # raised inside Hydra's instantiate (5 lines of wrapper before): the inner message only
    ("data.seq_len=20", "error: data.seq_len=20 is too short for the induction batch (need >= 57)"),
    *[(f"runner.device={d}", "error: " + m) for d, m in DEVICE_CASES],
    # what the model can take, from the revision's config.json, before its (here truncated) weights are loaded
    ("data.seq_len=5000", "error: data.seq_len=5000: longer than tiny's context (max_position_embeddings=512); use "
                          "data.seq_len <= 512"),
    ("model.batch.vocab_hi=5000", "error: data vocab range [5, 5000) does not fit tiny (vocab size 97)"),
    ("probe=induction_score probe.induction_score.lengths=[300,37]",
     "error: probe.induction_score.lengths=[300, 37]: its batch is 601 tokens, longer than tiny's context "
     "(max_position_embeddings=512)"),
    ("probe=sink_rate probe.sink.text_len=1000", "error: probe.sink.text_len=1000: longer than tiny's context "
                                                 "(max_position_embeddings=512)"),
    # ranges, counts, the sections that had no schema
    ("revisions.min_step=8 revisions.max_step=2", "error: revisions.min_step=8: must be <= revisions.max_step=2"),
    ("data.vocab_hi=5", "error: data.vocab_lo=5: must be < data.vocab_hi=5 (an empty range)"),
    ("revisions=log revisions.n=0", "error: revisions.n=0: must be an integer >= 2"),
    ("data.n_baseline=0", "error: data.n_baseline=0: must be an integer >= 1 (default 50)"),
    ("logger=wandb logger.mode=onlin", "error: logger.mode=onlin: must be one of auto, online, offline, disabled"),
    # names Hydra resolves itself: one line, not its multi-line errors
    ("hydra/launcher=jobib", "error: hydra/launcher=jobib: no such option (did you mean joblib? valid: basic, "
                             "joblib, "),
    ("hydra/launchr=joblib", "error: hydra/launchr=joblib: no such config group (did you mean hydra/launcher? "
                             "valid: hydra/env, "),
    ("hydra/job_logging=disabld", "error: hydra/job_logging=disabld: no such option (did you mean disabled? valid: "),
    ("runner.batchsize=4", "error: runner.batchsize=4: no such option (did you mean batch_size? valid: device, "),
    ("modle=zoo-neox", "error: modle=zoo-neox: no such option (did you mean model? valid: "),
    ("revisions.n=8", "error: revisions.n=8: not in this config (revisions: "),
    ("probe.selectivity.eps=0", "error: probe.selectivity.eps=0: not in this config (probe.selectivity: _target_, "),
    ("runner.batch_size=[", "error: runner.batch_size=[: cannot parse it (no viable alternative at input '['"),
    ("+runner.device=cpu", "error: Could not append to config. An item is already at 'runner.device'."),
])
def test_bad_input_exits_with_one_line(unloadable, override, message):
    before = snapshot(unloadable)
    proc = harness(*common(unloadable, unloadable / "ckpts", "tiny", probe="selectivity"), "logger=none",
                   *override.split())
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout and "cannot load" not in proc.stderr
    if override.startswith("runner.device"):
        assert "devices here: cpu" in lines[0]
    assert snapshot(unloadable) == before


def test_nonfinite_revision_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    """A checkpoint whose attention overflows (an inf weight, as fp16 gives at early Pythia checkpoints) is
    recorded as failed with the fix, is not reused as complete, and the findings list it as left out."""
    import json

    from test_e2e import save_revisions
    from transformers import AutoModelForCausalLM

    ckpts = tmp_path / "ckpts"
    save_revisions("gpt_neox", ckpts)
    model = AutoModelForCausalLM.from_pretrained(ckpts / "step2")
    with torch.no_grad():
        model.gpt_neox.layers[0].attention.query_key_value.weight[:8] = float("inf")
    model.save_pretrained(ckpts / "step2")
    args = (*common(tmp_path, ckpts, "tiny", probe="selectivity"), "logger=none")
    proc = harness(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = tmp_path / "results" / "default" / "tiny"
    bad = json.loads((model_dir / "step2" / "summary.json").read_text())
    assert bad["status"] == "failed" and "non-finite" in bad["reason"] and bad["scalars"] == {}
    assert bad["provenance"]["revision"] == "step2" and bad["suggestion"]
    assert "step2: failed: non-finite" in proc.stdout + proc.stderr
    for ok in ("step0", "step6"):
        assert "status" not in json.loads((model_dir / ok / "summary.json").read_text())
    findings = json.loads((model_dir / "findings.json").read_text())
    assert findings["revisions"] == ["step0", "step6"]
    assert any(s.startswith("step2 (failed: non-finite") for s in findings["skipped"])

    again = harness(*args)  # the good revisions are reused, the failed one is tried again
    assert again.returncode == 0, again.stderr[-3000:]
    logs = again.stdout + again.stderr
    assert "tiny step0: reusing" in logs and "tiny step6: reusing" in logs and "tiny step2: reusing" not in logs
    assert "step2: failed" in logs


def test_secrets_never_reach_a_written_file(tmp_path):
    """A planted W&B key and hub token appear in no file the job writes (results, Hydra logs, the W&B run)."""
    ckpts = tmp_path / "ckpts"
    tiny_model("gpt_neox").save_pretrained(ckpts / "step0")
    wandb_key, hf_token = "0123456789abcdef" * 2 + "feedface", "hf_PlantedTokenForTheLeakTest0123"
    env = {"WANDB_API_KEY": wandb_key, "HF_TOKEN": hf_token, "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb_data"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config")}
    proc = harness(*common(tmp_path, ckpts, "tiny", probe="selectivity"), "logger=wandb", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "ckpts" not in p.parts]
    assert any("wandb_runs" in p.parts for p in written) and any(p.name == "summary.json" for p in written)
    for secret in (wandb_key, hf_token):
        leaks = [str(p) for p in written if secret.encode() in p.read_bytes()]
        assert not leaks and secret not in proc.stdout + proc.stderr, leaks


@pytest.fixture
def refusing_wandb_server():
    """A local W&B endpoint that refuses every key (HTTP 401), as the real one does for a wrong API key."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _deny(self):
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"errors":[{"message":"user is not logged in"}]}')

        do_GET = do_POST = _deny

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_wrong_wandb_key_keeps_going_offline_and_says_so_once(tmp_path, refusing_wandb_server):
    from wandb_offline import find_runs, read_run

    ckpts = tmp_path / "ckpts"
    for step in (0, 1):
        tiny_model("gpt_neox").save_pretrained(ckpts / f"step{step}")
    wrong_key = "0123456789abcdef" * 2 + "deadbeef"
    env = {"WANDB_API_KEY": wrong_key, "WANDB_BASE_URL": refusing_wandb_server, "WANDB_MODE": "",
           "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config")}
    proc = harness(*common(tmp_path, ckpts, "tiny", probe="selectivity"), "logger=wandb", "logger.mode=online",
                   env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    said = [line for line in logs.splitlines() if "online init failed" in line]
    assert len(said) == 1 and "logging offline instead" in said[0], logs[-3000:]
    assert "Traceback" not in logs and "opentelemetry" not in logs
    assert len(list((tmp_path / "results").rglob("summary.json"))) == 2
    runs = find_runs(tmp_path / "wandb_runs")
    assert len(runs) == 1 and "offline-run-" in str(runs[0])
    assert len([r for r in read_run(runs[0]).history if "selectivity.n_valid" in r]) == 2  # kept for `wandb sync`
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "ckpts" not in p.parts]
    assert not [str(p) for p in written if wrong_key.encode() in p.read_bytes()]


def test_results_folder_that_cannot_be_written(unloadable, tmp_path):
    """A file where the results folder should be: one line before any checkpoint is loaded."""
    (tmp_path / "taken").write_text("not a folder")
    args = (*common(unloadable, unloadable / "ckpts", "tiny", probe="selectivity"), "logger=none")
    proc = harness(*args, f"paths.results_dir={tmp_path / 'taken'}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: cannot write results to ") and "paths.results_dir" in lines[0]
    assert "cannot load" not in proc.stderr and (tmp_path / "taken").read_text() == "not a folder"


@contextlib.contextmanager
def small_disk(folder: Path, kib: int):
    """A tmpfs of `kib` KiB mounted on `folder` (mount needs root, as on CI; the test is skipped elsewhere)."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_stops_with_one_line_and_leaves_nothing_half_written(tmp_path):
    """A 32 KiB tmpfs as the results folder: the start-up check fails."""
    with small_disk(tmp_path / "disk", 32) as disk:
        ckpts = tmp_path / "ckpts"
        tiny_model("gpt_neox").save_pretrained(ckpts / "step0")
        proc = harness(*common(tmp_path, ckpts, "tiny", probe="selectivity"), "logger=none",
                       f"paths.results_dir={disk}")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "No space left on device" in lines[0]
        assert not [p for p in disk.rglob("*") if p.is_file()]  # no temporary or partial file left


def test_disk_full_mid_sweep_keeps_every_complete_revision_and_resumes(tmp_path):
    """A 96 KiB tmpfs passes the start-up check and fills after ~6 revisions, in the middle of a write: one line,
    every stored revision is a complete pair (its parquet's sha256 in its summary), no temporary file; with space
    again, the rerun reuses them and computes only the rest."""
    import hashlib
    import json

    from test_e2e import save_revisions

    with small_disk(tmp_path / "disk", 96) as disk:
        ckpts = tmp_path / "ckpts"
        save_revisions("gpt_neox", ckpts, steps=tuple(range(8)))
        args = (*common(tmp_path, ckpts, "tiny", probe="selectivity"), "logger=none", f"paths.results_dir={disk}")
        proc = harness(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "No space left on device" in lines[0] and "recomputed by the next run" in lines[0]
        revs = sorted((disk / "default" / "tiny").glob("step*"))
        done = [r for r in revs if (r / "summary.json").exists()]
        assert 0 < len(done) < 8 and not [p for p in disk.rglob(".*") if p.is_file() and p.name != ".lock"]
        for r in done:
            digest = hashlib.sha256((r / "heads.parquet").read_bytes()).hexdigest()
            assert json.loads((r / "summary.json").read_text())["heads_sha256"] == digest
        kept = {r.name: (r / "summary.json").read_bytes() for r in done}

        subprocess.run(["mount", "-o", "remount,size=10m", str(disk)], check=True)
        proc = harness(*args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"{len(done)} already in the store" in proc.stdout + proc.stderr
        assert {n: (disk / "default" / "tiny" / n / "summary.json").read_bytes() for n in kept} == kept
        assert len(list((disk / "default" / "tiny").glob("step*/summary.json"))) == 8


def job_after_first_revision(tmp_path, steps: int, n: int):
    """A running `python -m harness` job (logger=wandb, offline) over `steps` tiny revisions, returned once its
    first revision is stored: the moment to interrupt it. Returns (process, model results folder)."""
    import signal
    import sys
    import time

    from test_e2e import ROOT, save_revisions

    ckpts = tmp_path / "ckpts"
    save_revisions("gpt_neox", ckpts, steps=tuple(range(steps)))
    args = [a for a in common(tmp_path, ckpts, "tiny", probe="selectivity") if not a.startswith("data.n=")]
    # A shell's background job (`pytest ... &`) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the job the default disposition, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args, f"data.n={n}"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "WANDB_SILENT": "true"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    model_dir = tmp_path / "results" / "default" / "tiny"
    deadline = time.time() + 300
    while not (model_dir / "step0" / "summary.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    return proc, model_dir


@pytest.mark.parametrize("sig, word", [("SIGINT", "interrupted"), ("SIGTERM", "terminated")])
def test_ctrl_c_or_sigterm_stops_quickly_closes_the_run_and_keeps_the_store_consistent(tmp_path, sig, word):
    """SIGINT (Ctrl-C) or SIGTERM (kill, preemption) mid-sweep: exit 128 + signal before the sweep ends, one line,
    the W&B run finished, every stored result complete."""
    import signal

    from wandb_offline import find_runs, read_run

    from harness.results import store

    proc, model_dir = job_after_first_revision(tmp_path, steps=6, n=600)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig), (proc.returncode, err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"{word}: finished revisions are stored; run the same command again to resume"], err
    done = [d for d in model_dir.iterdir() if (d / "summary.json").exists()]
    assert done and len(done) < 6  # stopped mid-sweep: a job that ignored the signal would store all six
    assert all(store.summary(d) is not None for d in done)  # each summary names the parquet beside it
    (run,) = find_runs(tmp_path / "wandb_runs")
    assert read_run(run).complete  # the run was finished, not abandoned


def test_wandb_service_dying_mid_run_does_not_stop_the_job(tmp_path):
    """Kill wandb-core after the first revision: one warning, the job finishes, every revision is stored."""
    import signal

    from harness.results import store

    proc, model_dir = job_after_first_revision(tmp_path, steps=4, n=400)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    cores = [pid for pid in children if "wandb-core" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
    assert cores, "no wandb-core service under the job"
    for pid in cores:
        os.kill(int(pid), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert (out + err).count("wandb stopped working") == 1 and "Traceback" not in err
    assert all(store.summary(model_dir / f"step{s}") is not None for s in (0, 1, 2, 3))
    assert (model_dir / "findings.json").exists()


@pytest.mark.parametrize("command, override, line", [
    ("report", "experimnt_name=x", "error: experimnt_name=x: no such option (did you mean experiment_name? "),
    ("analyze", "logger=nonee", "error: logger=nonee: no such option (did you mean none? valid: none, wandb)"),
])
def test_analyze_and_report_check_names_before_hydra(command, override, line):
    proc = harness(command, override)
    assert proc.returncode == 2 and proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
