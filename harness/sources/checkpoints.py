"""Checkpoint files: identity before download, resolution to files on disk, prefetch, release.

`harness.sources.revisions` says which revisions a job probes; this module gets their files. A checkpoint's
identity is known before anything is downloaded (`checkpoint_id`: the hub commit its branch points at, or a
local folder's file fingerprint), so a job skips a revision whose result is already in the store without
fetching it; `weights_hash` (sha256 over the weight files) identifies the weights once they are here.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

from harness.common.files import file_sha256
from harness.common.locks import flock
from harness.sources.folders import is_checkpoint, weight_files
from harness.sources.hubcache import cache_dir as hub_cache
from harness.sources.hubcache import repo_folder
from harness.sources.revisions import (
    Revision,
    RevisionError,
    available,
    cached_refs,
    fetched_commits,
    is_local,
    local_only,
    make_revision,
    missing_error,
    model_config,
    offline,
)

log = logging.getLogger("harness.sources.revisions")  # one logger for everything about revisions

# What a probe run needs from a hub revision (no optimizer states, no duplicate .bin weights).
PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
            "tokenizer*", "special_tokens_map.json", "vocab.json", "merges.txt"]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]  # only when a revision has no safetensors
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_hash_memo: dict[tuple, str] = {}
_cache_lock = threading.RLock()  # a release must not race a prefetch that is linking shared blobs


@dataclass(frozen=True)
class Resolved(Revision):
    source: str  # what to pass to from_pretrained: a repo id, or a local folder
    hub_revision: str | None  # None for local folders
    commit: str | None  # the 40-hex hub commit; a local folder's file fingerprint (files_fingerprint)
    path: Path  # the local snapshot folder
    weights_hash: str | None  # sha256 over the weight files
    duplicate_of: str | None = None  # an earlier revision of the grid with the same weights
    local_only: bool = False  # load without asking the hub (revisions.local_only)

    @property
    def revision(self) -> Revision:
        return Revision(**{f.name: getattr(self, f.name) for f in fields(Revision)})


# ---------------------------------------------------------------- identity


def _file_hash(f: Path) -> str:
    """A weight file's sha256: a hub blob's own name when it is one (LFS blobs are named by sha256)."""
    real = f.resolve()
    if f.is_symlink() and _SHA256.match(real.name):
        return real.name
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _hash_memo:
        _hash_memo[key] = file_sha256(real)
    return _hash_memo[key]


def weights_hash(folder: Path) -> str | None:
    files = weight_files(folder)
    if not files:
        return None
    lines = "".join(f"{f.name}\t{_file_hash(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def files_fingerprint(folder: Path) -> str:
    """A local checkpoint folder's identity from stat alone (no file is read): name, size and modification
    time of each file in it. Rewriting any file changes it; a copy of the folder changes it too, and the
    store then compares weights hashes instead."""
    h = hashlib.sha1()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"{f.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return "files-" + h.hexdigest()[:24]


def checkpoint_id(model_cfg, rev: Revision, *, cache_dir=None) -> str | None:
    """What `resolve(rev).commit` will be, known before any download, or None.

    Hub: the commit the revision's branch points at, as the hub listed it in this process (available() did),
    else the cache's ref, which is what an offline run or a failed download loads. Local folder: its file
    fingerprint. None (e.g. not cached and the hub not reached): the store decides after download, by
    weights hash."""
    model_cfg = model_config(model_cfg)
    if is_local(model_cfg.repo):
        path = Path(str(model_cfg.repo)).expanduser().resolve() / rev.name
        return files_fingerprint(path) if is_checkpoint(path) else None
    listed = None if local_only(model_cfg) else fetched_commits(model_cfg.repo)
    if listed is not None:
        return listed.get(rev.name)
    ref = repo_folder(model_cfg.repo, Path(cache_dir or hub_cache())) / "refs" / rev.name
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


# ---------------------------------------------------------------- resolution

def _repo_lock(repo: str, cache: Path, *, shared: bool):
    """Across processes (the jobs of a sweep share the hub cache): downloads hold it shared, release() holds it
    exclusive, so a release never deletes a blob (a tokenizer file, identical in every revision) that another
    job is linking into its snapshot."""
    return flock(repo_folder(repo, cache) / ".ct-release.lock", shared=shared)


def resolve(model_cfg, rev: Revision, *, download: bool = True, cache_dir=None) -> Resolved:
    """Files on disk for one revision. download=False uses only what is already cached."""
    model_cfg = model_config(model_cfg)
    base = {f.name: getattr(rev, f.name) for f in fields(Revision)}
    if is_local(model_cfg.repo):
        path = Path(str(model_cfg.repo)).expanduser().resolve() / rev.name
        if not is_checkpoint(path):
            raise missing_error(model_cfg, rev.name, available(model_cfg),
                           f"{model_cfg.name} has no saved checkpoint '{rev.name}' in {path.parent}")
        return Resolved(**base, source=str(path), hub_revision=None, commit=files_fingerprint(path), path=path,
                        weights_hash=weights_hash(path))
    from huggingface_hub import snapshot_download

    cache = Path(cache_dir or hub_cache())
    no_hub = local_only(model_cfg) or not download
    try:
        with _cache_lock, _repo_lock(model_cfg.repo, cache, shared=True):
            path = Path(snapshot_download(model_cfg.repo, revision=rev.name, allow_patterns=PATTERNS,
                                          cache_dir=cache, local_files_only=no_hub))
            if not weight_files(path) and not no_hub:  # an old revision with .bin weights only
                path = Path(snapshot_download(model_cfg.repo, revision=rev.name, cache_dir=cache,
                                              allow_patterns=PATTERNS + BIN_PATTERNS))
    except Exception as e:  # OSError (offline, not cached), HfHubHTTPError, validation errors
        raise _resolve_error(model_cfg, rev.name, cache, no_hub, e) from e
    if not weight_files(path):
        raise RevisionError(f"{model_cfg.name} revision '{rev.name}' has no weight files in {path}")
    commit = path.name if _COMMIT.match(path.name) else None
    return Resolved(**base, source=str(model_cfg.repo), hub_revision=rev.name, commit=commit, path=path,
                    weights_hash=weights_hash(path), local_only=local_only(model_cfg))


def _resolve_error(model_cfg, name, cache, local_only, e) -> RevisionError:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(e, RepositoryNotFoundError):
        return RevisionError(f"{model_cfg.name}: repo '{model_cfg.repo}' not found on the hub")
    try:
        known = available(model_cfg, cache_dir=cache)
    except RevisionError:
        known = []
    if isinstance(e, RevisionNotFoundError) or name not in {r.name for r in known}:
        return missing_error(model_cfg, name, known)
    why = ("the hub is offline (HF_HUB_OFFLINE)" if offline() else
           "the model is local-only (model.offline=true)" if model_cfg.get("offline") else
           "download=False" if local_only
           else f"the hub cannot be reached ({type(e).__name__})")
    cached = [r for r in _cached_revisions(model_cfg, cache) if r.name != name]
    msg = f"{model_cfg.name} revision '{name}' is not in the hub cache {cache} and {why}"
    return missing_error(model_cfg, name, cached, msg + ("; cached" if cached else "; nothing of this repo is cached"))


def _cached_revisions(model_cfg, cache) -> list[Revision]:
    return [make_revision(model_cfg, n) for n in sorted(cached_refs(model_cfg.repo, cache))]


def flag_same_weights(resolved):
    """Yield each Resolved, with duplicate_of set where its weights equal an earlier one's (Pythia step0 == step1).

    A generator, so the Prefetcher can mark revisions as they stream in."""
    seen: dict[str, str] = {}
    for r in resolved:
        first = seen.setdefault(r.weights_hash, r.name) if r.weights_hash else r.name
        if first != r.name:
            log.warning("revision %s has the same weights as %s (hash %s...)", r.name, first, r.weights_hash[:12])
            r = replace(r, duplicate_of=first)
        yield r


class Prefetcher:
    """Iterate Resolved revisions in order; while revision i is yielded (and probed), i+1 downloads."""

    def __init__(self, model_cfg, revs: list[Revision], *, download: bool = True, cache_dir=None, resolver=None):
        self.model_cfg, self.revs = model_cfg, list(revs)
        self._resolve = resolver or (lambda r: resolve(model_cfg, r, download=download, cache_dir=cache_dir))
        self.pending: str | None = None  # name of the revision being prefetched now
        self.future = None

    def __iter__(self):
        return flag_same_weights(self._stream())

    def _stream(self):
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        try:
            self.future = pool.submit(self._resolve, self.revs[0]) if self.revs else None
            for i in range(len(self.revs)):
                res = self.future.result()
                nxt = self.revs[i + 1] if i + 1 < len(self.revs) else None
                self.future = pool.submit(self._resolve, nxt) if nxt else None
                self.pending = nxt.name if nxt else None
                yield res
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a half-done download is left to finish cleanly


def release(resolved: Resolved) -> int:
    """Delete a hub revision's snapshot and the blobs no other snapshot uses; returns bytes freed.

    Local-folder revisions are never deleted. The refs stay, so the name is still known offline.
    """
    path = Path(resolved.path) if resolved.path else None
    if resolved.hub_revision is None or path is None or path.parent.name != "snapshots" or not path.is_dir():
        return 0
    blobs, refs = path.parent.parent / "blobs", path.parent.parent / "refs"
    aliases = [p.name for p in refs.rglob("*") if p.is_file() and p.name != resolved.hub_revision
               and p.read_text().strip() == path.name]
    if aliases:  # e.g. Pythia main == step143000: one snapshot, and the other name may still be used
        log.info("keeping %s: the snapshot is also revision %s", resolved.name, ", ".join(aliases))
        return 0
    with _cache_lock, _repo_lock(resolved.source, blobs.parent.parent, shared=False):
        def used(snap: Path) -> set[Path]:
            return {f.resolve() for f in snap.rglob("*") if f.is_symlink()}

        mine = used(path)
        others = set().union(*[used(s) for s in path.parent.iterdir() if s != path and s.is_dir()])
        shutil.rmtree(path)
        freed = 0
        for b in mine - others:
            if b.parent == blobs.resolve() and b.is_file():
                freed += b.stat().st_size
                b.unlink()
    log.info("released %s (%s): %.1f MB freed", resolved.name, resolved.commit, freed / 1e6)
    return freed

