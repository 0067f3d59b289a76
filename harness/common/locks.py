"""File locks shared by processes: jobs of one sweep, on one machine or on several nodes (NFS).

fcntl.flock works across processes on one machine and across nodes on NFS (the Linux client maps it to
POSIX locks). On a file system without locks (Lustre mounted without -o flock) it warns once and goes on
unlocked: every write stays atomic, so the cost is at worst duplicated work.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("harness.common.locks")
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
_warned: set[str] = set()


@contextmanager
def flock(path: Path, *, shared: bool = False):
    """Hold an exclusive (or shared) lock on `path` (created if missing); blocks until it is granted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            if str(path.parent) not in _warned:
                _warned.add(str(path.parent))
                log.warning("no file locks under %s (%s): concurrent jobs may repeat each other's work",
                            path.parent, os.strerror(e.errno))
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
