"""Which checkpoint folders of a training run in progress are complete: safe to load while the trainer writes more.

A trainer writes a checkpoint over seconds to minutes, and nothing tells an outside reader when it is done:
inotify does not fire on NFS or Lustre, and the trainers differ in how they write (polling reads the folder):

    HF Trainer   writes straight into checkpoint-<N> (config, weights, training_args.bin, optimizer, scheduler),
                 trainer_state.json last
    olmo-core    writes step<N>-tmp, renames it to step<N>, writes .metadata.json last
    save_pretrained   config.json, the shards, the shard index last

A folder is complete when its name parses to a step and is no temp name; config.json parses; each safetensors
file is as long as its header says; every shard an index lists is there (a `-of-` shard waits for its index);
the trainer's last file is there where the trainer writes one (siblings of the same naming hold it, or the
folder holds that trainer's other files); and its fingerprint (names, sizes, mtimes) stayed the same for
`settle_s` seconds, for the writers that give no other sign.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.common.errors import HarnessError
from harness.sources import names as naming
from harness.sources.folders import weight_files

log = logging.getLogger("harness.watch")

_TEMP = re.compile(r"^\.|^tmp|[-_.](tmp|temp|partial|incomplete)$", re.IGNORECASE)
_SHARD = re.compile(r"-\d+-of-(\d+)\.safetensors$")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# A trainer's last file, and what says a folder is that trainer's (besides a finished sibling holding it).
MARKERS = {
    "trainer_state.json": ("training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "rng_state.pth"),
    ".metadata.json": ("model_and_optim", "train"),  # olmo-core's distributed state folders
}
_MAX_HEADER = 100 << 20  # a safetensors header this long is garbage (a file being overwritten), not a header


class WatchError(HarnessError, ValueError):
    pass


def step_of(name: str) -> int | None:
    """The step a checkpoint folder's name gives, or None for temp names and names that do not parse."""
    if _TEMP.search(name):
        return None
    parsed = naming.parse(name)
    return None if parsed.index else parsed.step


def fingerprint(folder: Path) -> tuple:
    """Names, sizes and mtimes of every file under the folder (subfolders too: olmo-core's state); a file that
    disappears while it is read changes it as well, so it raises FileNotFoundError only when the folder is gone."""
    entries = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            p = Path(top) / f
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    return tuple(entries)


def safetensors_missing(path: Path) -> str | None:
    """Why a safetensors file is not complete yet (its header gives its full size), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name}: {size} bytes, no header yet"
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                return f"{path.name}: header not written yet ({size} bytes)"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{path.name}: header not readable yet"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and len(v.get("data_offsets") or ()) == 2]
    want = 8 + n + max(ends, default=0)
    if size != want:
        return f"{path.name}: {size} of {want} bytes"
    return None


def _json_missing(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return f"no {path.name} yet"
    except (OSError, ValueError):
        return f"{path.name} not complete yet"
    return None


def _index_missing(folder: Path, index: Path) -> str | None:
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{index.name} not complete yet"
    absent = sorted(s for s in shards if not (folder / s).is_file())
    return f"{len(absent)} of {len(shards)} shards not written yet (e.g. {absent[0]})" if absent else None


def missing(folder: Path, markers=()) -> str | None:
    """What the folder still lacks to be a complete checkpoint (one phrase), or None. `markers`: the trainers'
    last files that sibling folders of the same naming hold; the folder waits for those too."""
    folder = Path(folder)
    why = _json_missing(folder / "config.json")
    if why:
        return why
    files = weight_files(folder)
    if not files:
        return "no weight files yet"
    for index in INDEXES:
        if (folder / index).exists():
            why = _index_missing(folder, folder / index)
            if why:
                return why
    sharded = [f for f in files if _SHARD.search(f.name)]
    if sharded and not (folder / INDEXES[0]).exists():
        return f"no {INDEXES[0]} yet (shards {sharded[0].name}, ...)"
    for f in files:
        why = safetensors_missing(f) if f.suffix == ".safetensors" else _bin_missing(f)
        if why:
            return why
    for marker, evidence in MARKERS.items():
        if marker in markers or any((folder / e).exists() for e in evidence) or (folder / marker).exists():
            why = _json_missing(folder / marker)
            if why:
                return why
    return None


def _bin_missing(path: Path) -> str | None:
    """A torch.save zip archive is complete once its end record is written; a legacy pickle has no such sign."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return None
        return None if zipfile.is_zipfile(path) else f"{path.name}: archive not complete yet"
    except OSError:
        return f"{path.name}: not readable yet"


def _pattern(name: str) -> str:
    """The naming a folder shares with its siblings from the same writer: checkpoint-#, step#, step#-tokens#B."""
    return re.sub(r"\d+", "#", name)


@dataclass
class Ready:
    """A complete, settled checkpoint folder to probe."""
    name: str
    path: Path
    step: int
    fingerprint: tuple = field(repr=False)


@dataclass
class _State:
    fingerprint: tuple
    since: float  # when the fingerprint last changed
    why: str | None = None  # what it lacked at the last poll
    handled: tuple | None = None  # the fingerprint probed (or failed) last: not handed out again unless it changes


class Watcher:
    """Polls a run folder; `poll()` returns the folders that became complete and settled since the last call, in
    step order. The caller says what came of each: `done` (probed or in the store), `failed` (a load error on a
    settled folder: not handed out again until its files change) or nothing (it changed meanwhile: handed out
    again once it has settled anew)."""

    def __init__(self, root, settle_s: float = 10.0, clock=time.monotonic, label: str = "watch"):
        self.root, self.settle_s, self.clock, self.label = Path(root), float(settle_s), clock, label
        self.seen: dict[str, _State] = {}
        self.markers: dict[str, set[str]] = {}  # name pattern -> trainers' last files its folders hold

    def poll(self) -> list[Ready]:
        now = self.clock()
        try:
            subdirs = {d.name: d for d in self.root.iterdir() if d.is_dir() and step_of(d.name) is not None}
        except FileNotFoundError:
            subdirs = {}
        for name in list(self.seen):
            if name not in subdirs:
                state = self.seen.pop(name)
                if state.handled is None:
                    log.info("%s: %s removed before it was probed (rotated away by the trainer?); skipped",
                             self.label, name)
        # Which trainers write here: the last files folders of each name pattern hold (checkpoint-<N> from the HF
        # Trainer, step<N> from another writer: a run folder may hold both), before any folder is judged by them.
        for name, path in subdirs.items():
            self.markers.setdefault(_pattern(name), set()).update(m for m in MARKERS if (path / m).is_file())
        ready = []
        for name, path in sorted(subdirs.items(), key=lambda kv: (step_of(kv[0]), kv[0])):
            try:
                fp = fingerprint(path)
            except FileNotFoundError:
                continue  # gone between the listing and now: the next poll says so if it was seen before
            state = self.seen.get(name)
            if state is None or state.fingerprint != fp:
                state = self.seen[name] = _State(fp, now, handled=state.handled if state else None)
            if state.handled == fp:
                continue
            why = missing(path, self.markers.get(_pattern(name), ()))
            if why != state.why:
                log.debug("%s: %s: %s", self.label, name, why or "complete; settling")
                state.why = why
            if why is None and now - state.since >= self.settle_s:
                ready.append(Ready(name, path, step_of(name), fp))
        return ready

    def done(self, ready: Ready) -> None:
        """Probed (or found in the store): not handed out again unless its files change (a rewritten step)."""
        if ready.name in self.seen:
            self.seen[ready.name].handled = ready.fingerprint

    def failed(self, ready: Ready) -> None:
        """A load error on a settled folder: reported once by the caller, retried only once its files change."""
        self.done(ready)

    def changed(self, ready: Ready) -> bool:
        """Whether the folder changed (or vanished) since `poll` handed it out: a load error then is no verdict."""
        try:
            return (fingerprint(ready.path) != ready.fingerprint
                    or missing(ready.path, self.markers.get(_pattern(ready.name), ())) is not None)
        except FileNotFoundError:
            return True

    def gone(self, ready: Ready) -> bool:
        return not ready.path.is_dir()
