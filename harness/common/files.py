"""Files written whole or not at all, and their content hashes.

Every file the harness writes that another process may read while it is written (results, hub-cache refs
and blobs, saved revision lists, training states) goes through `atomic_write`: a temporary file in the same
folder, then a rename, so a reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates files 0600, a store shared by a team needs the usual mode


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, write) -> Path:
    """`write(tmp_path)` fills a temporary file beside `path`, which then replaces `path`; on any error the
    temporary file is removed and `path` is left as it was. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
