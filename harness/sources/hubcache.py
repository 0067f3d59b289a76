"""Put a local checkpoint folder into the standard Hugging Face hub cache, so that
`from_pretrained(repo_id, revision=...)` finds it with HF_HUB_OFFLINE=1 (layout: ../shared/NOTES.md).

    models--org--name/blobs/<sha256>                      file contents, content-addressed
    models--org--name/snapshots/<commit>/<file>           -> ../../blobs/<sha256> (relative symlinks)
    models--org--name/refs/<revision>                     the 40-hex commit id, no newline
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.common.files import file_sha256, write_bytes


def cache_dir() -> Path:
    """The hub cache the hub client would use: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants  # its default, read once at import

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str, cache: str | Path | None = None) -> Path:
    return Path(cache or cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def publish(src_dir: str | Path, repo_id: str, revision: str, cache_dir: str | Path | None = None) -> str:
    """Copy every file under `src_dir` into the cache as `revision` of `repo_id`; return the commit id.

    Order matters for readers running concurrently: blobs first, then the snapshot, then the ref,
    so a ref never points at an incomplete snapshot. The commit id is a deterministic sha1 of the
    (relative name, sha256) pairs: identical folders publish to the same snapshot.
    """
    src = Path(src_dir)
    root = repo_folder(repo_id, cache_dir)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"nothing to publish in {src}")
    hashes = {p.relative_to(src).as_posix(): file_sha256(p) for p in files}
    commit = hashlib.sha1("".join(f"{n}\0{h}\n" for n, h in sorted(hashes.items())).encode()).hexdigest()

    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for name, h in hashes.items():
        blob = root / "blobs" / h
        if not blob.exists():
            write_bytes(blob, (src / name).read_bytes())

    snap = root / "snapshots" / commit
    for name, h in hashes.items():
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(root / "blobs" / h, link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)

    (root / "refs").mkdir(parents=True, exist_ok=True)
    write_bytes(root / "refs" / revision, commit.encode())
    return commit


def resolve(repo_id: str, revision: str, cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot folder `revision` points at, or None when the cache has no such ref."""
    root = repo_folder(repo_id, cache_dir)
    ref = root / "refs" / revision
    if not ref.is_file():
        return None
    snap = root / "snapshots" / ref.read_text().strip()
    return snap if snap.is_dir() else None
