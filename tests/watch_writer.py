"""`python tests/watch_writer.py <saved> <run> <watch log>`: a trainer's checkpoint writes, the awkward ways, into
<run> while `python -m harness watch` watches it (tests/test_watch.py). <saved>/step<N> are finished checkpoints
to copy from; <watch log> is the watcher's stderr, read to write some folders only once it has looked.

    step2          config.json and a truncated model.safetensors for a while, then the rest of the file
    step4          written into step4-tmp, then renamed (olmo-core)
    step6          written whole and removed before it settles (rotated away by save_total_limit)
    checkpoint-8   weights and training_args.bin without trainer_state.json for a while, then it (HF Trainer)
"""
import shutil
import sys
import time
from pathlib import Path

HOLD = 3.0  # how long each unfinished state stays: longer than the watcher's settle_s, so it settles unfinished


def wait_for(log: Path, text: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > end:
            sys.exit(f"watch_writer: no '{text}' in {log} after {timeout}s")
        time.sleep(0.1)


def main(saved: Path, run: Path, log: Path) -> None:
    wait_for(log, "watching ")
    run.mkdir(parents=True, exist_ok=True)

    step2 = run / "step2"
    step2.mkdir()
    shutil.copy(saved / "step2" / "config.json", step2)
    weights = (saved / "step2" / "model.safetensors").read_bytes()
    with open(step2 / "model.safetensors", "wb") as f:
        f.write(weights[: len(weights) // 2])
        f.flush()
        time.sleep(HOLD)
        f.write(weights[len(weights) // 2:])

    shutil.copytree(saved / "step4", run / "step4-tmp")
    time.sleep(HOLD)
    (run / "step4-tmp").rename(run / "step4")

    wait_for(log, "step 4 probed")
    time.sleep(1.0)  # its findings written, the watcher is polling again: it sees step6 before it goes
    shutil.copytree(saved / "step6", run / "step6")
    time.sleep(1.0)  # less than the watcher's settle_s
    shutil.rmtree(run / "step6")

    ckpt = run / "checkpoint-8"
    shutil.copytree(saved / "step8", ckpt)
    (ckpt / "training_args.bin").write_bytes(b"training arguments")
    time.sleep(HOLD)
    (ckpt / "trainer_state.json").write_text('{"global_step": 8}')
    time.sleep(60)  # training goes on; the watcher stops at its `until` without us


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
