"""`python tests/die_after.py <n> <python -m harness arguments...>`: the harness, SIGKILLed in its (n+1)-th result
write, after heads.parquet and before summary.json, the worst moment for a crash (tests/test_sweeps.py)."""
import os
import signal
import sys

from harness.results import store

writes, limit = 0, None
_write_text = store.write_text


def _dying(path, text):
    global writes
    if path.name == "summary.json":
        if writes >= limit:
            os.kill(os.getpid(), signal.SIGKILL)
        writes += 1
    return _write_text(path, text)


def arm(n: int) -> None:
    global limit
    limit = n
    store.write_text = _dying


if __name__ == "__main__":
    arm(int(sys.argv[1]))
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    from harness.cli import main

    main()
