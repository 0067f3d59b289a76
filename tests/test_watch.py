"""Watch a run folder: which checkpoint folders are complete (rules on hand-made folders), and
`python -m harness watch` beside a real writer process (each complete checkpoint probed once)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_model

from harness.sources import watching
from harness.sources.watching import Watcher, missing, step_of


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """One real checkpoint (config.json + model.safetensors) and one sharded with an index."""
    root = tmp_path_factory.mktemp("saved")
    model = tiny_model("gpt_neox")
    model.save_pretrained(root / "whole")
    model.save_pretrained(root / "sharded", max_shard_size="60KB")
    return root


def copy(saved: Path, which: str, to: Path) -> Path:
    shutil.copytree(saved / which, to)
    return to


def test_names_temp_and_unparsed_are_skipped():
    assert step_of("step4") == 4 and step_of("checkpoint-6") == 6 and step_of("global_step8") == 8
    assert step_of("step1000-tokens2B") == 1000 and step_of("12") == 12
    for name in ("step4-tmp", ".tmp-step4", "tmp-checkpoint-6", "step4.tmp", "checkpoint-6_partial", "main",
                 "runs", "ckpt_003"):  # ckpt_<i> is an index, not a step
        assert step_of(name) is None, name


def test_complete_checkpoint(saved, tmp_path):
    assert missing(copy(saved, "whole", tmp_path / "step2")) is None
    assert missing(copy(saved, "sharded", tmp_path / "step4")) is None


def test_truncated_safetensors_by_header(saved, tmp_path):
    ckpt = copy(saved, "whole", tmp_path / "step2")
    f = ckpt / "model.safetensors"
    full = f.read_bytes()
    f.write_bytes(full[:-100])
    assert missing(ckpt) == f"model.safetensors: {len(full) - 100} of {len(full)} bytes"
    f.write_bytes(full[:5])  # not even the header length
    assert "no header yet" in missing(ckpt)
    f.write_bytes(full[:20])  # the header length, part of the header
    assert "header not written yet" in missing(ckpt)
    f.write_bytes(full + b"\0" * 8)  # longer than the header says: being rewritten
    assert "of" in missing(ckpt)
    f.write_bytes(full)
    assert missing(ckpt) is None


def test_index_lists_every_shard(saved, tmp_path):
    ckpt = copy(saved, "sharded", tmp_path / "step4")
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    (ckpt / shards[-1]).unlink()
    assert missing(ckpt) == f"1 of {len(shards)} shards not written yet (e.g. {shards[-1]})"
    shutil.copy(saved / "sharded" / shards[-1], ckpt / shards[-1])
    (ckpt / "model.safetensors.index.json").unlink()  # shards written, the index (written last) not yet
    assert missing(ckpt).startswith("no model.safetensors.index.json yet")
    (ckpt / "model.safetensors.index.json").write_text('{"metadata": {')
    assert missing(ckpt) == "model.safetensors.index.json not complete yet"


def test_trainer_state_where_the_trainer_writes_one(saved, tmp_path):
    plain = copy(saved, "whole", tmp_path / "plain" / "step2")
    assert missing(plain) is None  # save_pretrained alone: nothing more to wait for
    hf = copy(saved, "whole", tmp_path / "hf" / "checkpoint-2")
    (hf / "training_args.bin").write_bytes(b"x")  # the HF Trainer's: it writes trainer_state.json last
    assert missing(hf) == "no trainer_state.json yet"
    (hf / "trainer_state.json").write_text('{"global_step": ')
    assert missing(hf) == "trainer_state.json not complete yet"
    (hf / "trainer_state.json").write_text('{"global_step": 2}')
    assert missing(hf) is None
    # A sibling of a finished one waits for the same last file, even before it holds the trainer's other files.
    sibling = copy(saved, "whole", tmp_path / "hf" / "checkpoint-4")
    assert missing(sibling, {"trainer_state.json"}) == "no trainer_state.json yet"
    olmo = copy(saved, "whole", tmp_path / "olmo" / "step6")
    (olmo / "model_and_optim").mkdir()
    assert missing(olmo) == "no .metadata.json yet"


def test_config_and_weights_first(saved, tmp_path):
    ckpt = tmp_path / "step2"
    ckpt.mkdir()
    assert missing(ckpt) == "no config.json yet"
    (ckpt / "config.json").write_text('{"architectures": [')
    assert missing(ckpt) == "config.json not complete yet"
    shutil.copy(saved / "whole" / "config.json", ckpt)
    assert missing(ckpt) == "no weight files yet"


def test_watcher_settles_rotates_and_retries(saved, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    now = [0.0]
    w = Watcher(run, settle_s=5, clock=lambda: now[0])
    copy(saved, "whole", run / "step2")
    copy(saved, "whole", run / "step4-tmp")
    assert w.poll() == []  # complete, not settled yet
    now[0] = 5.0
    (ready,) = w.poll()
    assert (ready.name, ready.step) == ("step2", 2)
    assert not w.changed(ready)
    w.done(ready)
    now[0] = 20.0
    assert w.poll() == []  # probed: not handed out again
    (run / "step4-tmp").rename(run / "step4")
    assert w.poll() == []  # a new name: settles from now
    now[0] = 25.0
    (ready,) = w.poll()
    assert ready.name == "step4"
    w.failed(ready)  # a load error on a settled folder: not again until its files change
    now[0] = 40.0
    assert w.poll() == []
    (run / "step4" / "extra.txt").write_text("rewritten")
    assert w.poll() == []
    now[0] = 46.0
    (ready,) = w.poll()
    assert ready.name == "step4"
    w.done(ready)
    # One written and removed (save_total_limit) before it settled: one info line, nothing handed out.
    copy(saved, "whole", run / "step6")
    assert w.poll() == []
    shutil.rmtree(run / "step6")
    with caplog.at_level(logging.INFO, logger="harness.watch"):
        assert w.poll() == []
        assert w.poll() == []
    gone = [r.message for r in caplog.records if "step6" in r.message]
    assert gone == ["watch: step6 removed before it was probed (rotated away by the trainer?); skipped"]


def test_siblings_of_the_same_naming(saved, tmp_path):
    """checkpoint-<N> folders wait for the trainer_state.json the finished ones hold; step<N> folders beside them
    (another writer) do not."""
    run = tmp_path / "run"
    hf = copy(saved, "whole", run / "checkpoint-2")
    (hf / "trainer_state.json").write_text('{"global_step": 2}')
    copy(saved, "whole", run / "checkpoint-4")
    copy(saved, "whole", run / "step6")
    assert [r.name for r in Watcher(run, settle_s=0).poll()] == ["checkpoint-2", "step6"]


def test_changed_after_hand_out(saved, tmp_path):
    run = tmp_path / "run"
    copy(saved, "whole", run / "step2")
    w = Watcher(run, settle_s=0)
    (ready,) = w.poll()
    f = run / "step2" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    assert w.changed(ready)
    shutil.rmtree(run / "step2")
    assert w.changed(ready) and w.gone(ready)
    assert watching.safetensors_missing(tmp_path / "nothing.safetensors") == "nothing.safetensors: header not readable yet"


def test_watch_options_in_one_line(tmp_path):
    from harness.cli.watch import run_folder
    from harness.config import schema
    from harness.config.compose import compose

    cfg = compose(["model=local", f"model.repo={tmp_path}", "watch.settle_s=-1", "watch.until=8"])
    with pytest.raises(schema.ConfigError, match=r"^watch.settle_s=-1: must be a number of seconds >= 0$"):
        schema.check_watch(cfg)
    assert run_folder(cfg) == tmp_path.resolve()
    assert run_folder(compose(["model=local", f"model.repo={tmp_path}/not-yet"])) == tmp_path.resolve() / "not-yet"
    proc = subprocess.run([sys.executable, "-m", "harness", "watch", "model.repo=EleutherAI/pythia-70m"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: model.repo=EleutherAI/pythia-70m: watch reads a ")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_load_error_reported_once_and_idle_stop(saved, tmp_path, caplog):
    """A settled, complete-looking folder that does not load: one warning, nothing stored, not retried while its
    files stay the same; the watch stops after idle_s."""
    from harness.cli.watch import Watch
    from harness.live.prober import LiveProber

    run = tmp_path / "run"
    bad = copy(saved, "whole", run / "step2")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))  # 64 is not divisible by 5
    overrides = watch_args(tmp_path, run, settle_s=0, interval_s=0.1, idle_s=1.5, until=None)[4:]
    prober = LiveProber(None, overrides=overrides, source="watch", wandb="off")
    try:
        with caplog.at_level(logging.INFO, logger="harness.watch"):
            Watch(prober).run()
    finally:
        prober.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot load watched revision step2" in m for m in lines) == 1, lines
    assert "stopping (watch.idle_s)" in lines[-1]
    assert not (tmp_path / "results" / "default" / "watched" / "step2").exists()


# ---------------------------------------------------------------- `python -m harness watch` beside a writer

ROOT = Path(__file__).resolve().parents[1]
SETTLE_S = 2.0  # above the writer's 1 s rotation, below its 3 s unfinished states


def watch_args(tmp: Path, run: Path, **watch) -> list[str]:
    opts = {"interval_s": 0.3, "settle_s": SETTLE_S, "until": 8, **watch}
    return [sys.executable, "-m", "harness", "watch", "model=local", f"model.repo={run}", "model.name=watched",
            "model.tokens_per_step=1000", "model.batch.vocab_lo=5", "model.batch.vocab_hi=97",
            "model.batch.seq_len=64", "model.bos_id=0", "data.n=40", "probe=selectivity", "runner.device=cpu",
            "runner.dtype=float32", "logger=none", f"paths.root_dir={tmp}",
            *[f"watch.{k}={'null' if v is None else v}" for k, v in opts.items()]]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < end, f"no '{text}' after {timeout}s: " + log.read_text()[-3000:]
        time.sleep(0.1)


@pytest.mark.slow
def test_watch_beside_a_writer(tmp_path):
    from test_e2e import save_revisions

    from harness.sources.checkpoints import files_fingerprint, weights_hash

    saved, run, log = tmp_path / "saved", tmp_path / "run", tmp_path / "watch.log"
    save_revisions("gpt_neox", saved, steps=(2, 4, 6, 8))
    watcher = start(watch_args(tmp_path, run), log)
    writer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "watch_writer.py"), saved, run, log], cwd=ROOT)
    try:
        assert watcher.wait(timeout=180) == 0, log.read_text()[-3000:]
        assert writer.poll() is None  # the watcher stopped at `until`, not with the writer
    finally:
        writer.kill()
        writer.wait()
        watcher.kill()
    text = log.read_text()
    store = tmp_path / "results" / "default" / "watched"
    folders = {"step2": "step2", "step4": "step4", "step8": "checkpoint-8"}  # stored as: written as
    assert sorted(p.name for p in store.glob("step*")) == sorted(folders)
    for stored, written in folders.items():
        s = json.loads((store / stored / "summary.json").read_text())
        prov = s["provenance"]
        assert s.get("status") != "failed" and prov["source"] == "watch"
        assert prov["tokens"] == int(stored[4:]) * 1000
        # Probed once its files were final: the whole weights, the trainer's last file (checkpoint-8's fingerprint)
        assert prov["weights_hash"] == weights_hash(saved / f"step{stored[4:]}")
        assert prov["commit"] == files_fingerprint(run / written)
        assert text.count(f"watched: step {stored[4:]} probed in") == 1, text
    assert text.count("watched: step6 removed before it was probed") == 1, text
    assert "cannot load" not in text and "stopping (watch.until=8)" in text

    # Again over the finished run: everything is in the store, nothing is probed; SIGTERM stops it as a job.
    log = tmp_path / "again.log"
    again = start(watch_args(tmp_path, run, until=None), log)
    try:
        wait_for(log, "checkpoint-8 already in the store", again)
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        again.kill()
    text = log.read_text()
    assert all(f"{written} already in the store" in text for written in folders.values()), text
    assert "probed in" not in text and text.strip().splitlines()[-1].startswith("terminated: ")
    assert sorted(p.name for p in store.glob("step*")) == sorted(folders)
