"""Read offline W&B runs with no network (`wandb.Api()` cannot see them).

An offline run folder `<dir>/wandb/offline-run-<time>-<id>/` holds `run-<id>.wandb`, a LevelDB-style log:

    header   7 bytes: b":W&B", magic 0xBEE1 (u16 little-endian), version 0 (u8)
    blocks   of 32 KiB; a block is a sequence of chunks; fewer than 7 bytes left in a block are zero padding
    chunk    crc32 u32 | length u16 | type u8 | data[length]     (little-endian)
             type 1 FULL: a whole record; 2 FIRST, 3 MIDDLE, 4 LAST: a record split across blocks
    record   the joined data is one serialized `wandb.proto.wandb_internal_pb2.Record`

We decode the records we need: `run` (config at start), `config` (later updates), `history` (one per row),
`summary`, `artifact`. Values are JSON strings (`value_json`); history items may instead use a typed oneof.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32 u32 | length u16 | type u8
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path                                   # the .wandb file
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list = field(default_factory=list)
    config: dict = field(default_factory=dict)   # key -> decoded value (wandb's `_wandb` entry included)
    history: list = field(default_factory=list)  # one dict per logged row; media stay as their JSON dicts
    summary: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # {"name", "type", "metadata", "aliases", "files"}
    alerts: list = field(default_factory=list)  # {"title", "text", "level"} per run.alert()
    exit_code: int | None = None
    complete: bool = False                       # an exit record was seen (finish() ran to the end)

    @property
    def run_dir(self) -> Path:
        return self.path.parent


def iter_records(path):
    """Yield the raw payload (bytes) of every record in a `.wandb` file, checking each chunk's crc32."""
    data = Path(path).read_bytes()
    if data[:len(HEADER)] != HEADER:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    pos, parts = len(HEADER), []
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == length == kind == 0:  # zero padding (e.g. a file cut short while being written)
            pos += left_in_block
            continue
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        # the checksum covers the type byte and the data
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            return  # truncated or corrupt tail (run still being written, or killed): keep what was read so far
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = [chunk]
        elif kind == MIDDLE:
            parts.append(chunk)
        elif kind == LAST:
            parts.append(chunk)
            yield b"".join(parts)
            parts = []


def _loads(s: str):
    try:
        return json.loads(s)
    except ValueError:  # wandb writes NaN/Infinity, which json accepts; anything else stays a string
        return s


def _put(target: dict, item, value) -> None:
    """Store at the item's path. wandb-core writes every key as `nested_key` and flattens media: an image
    logged under "heatmap/x" arrives as items ["heatmap/x", "path"], ["heatmap/x", "_type"], ...; nesting
    them again gives back the media's JSON dict. Dots inside a key ("probe.metric") are not separators."""
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _pop(target: dict, item) -> None:
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        target = target.get(part, {})
    target.pop(path[-1], None)


def _history_value(item):
    kind = item.WhichOneof("value") if hasattr(item, "WhichOneof") else None
    if kind is None:
        return _loads(item.value_json)
    if kind == "none":
        return None
    if kind == "json":
        return _loads(item.json)
    return getattr(item, kind)


def read_run(path) -> OfflineRun:
    """Parse an offline run folder (or its `.wandb` file) into config, history rows, summary and artifacts."""
    from wandb.proto import wandb_internal_pb2 as pb  # the schema of each record

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise FileNotFoundError(f"no .wandb file in {path}")
        path = files[0]
    run = OfflineRun(path=path)
    for payload in iter_records(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.job_type, run.name, run.tags = r.job_type, r.display_name, list(r.tags)
            for item in r.config.update:
                _put(run.config, item, _loads(item.value_json))
        elif kind in ("config", "summary"):  # same update/remove shape
            target, delta = (run.config, rec.config) if kind == "config" else (run.summary, rec.summary)
            for item in delta.update:
                _put(target, item, _loads(item.value_json))
            for item in delta.remove:
                _pop(target, item)
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                _put(row, item, _history_value(item))
            run.history.append(row)
        elif kind == "artifact":
            a = rec.artifact
            run.artifacts.append({
                "name": a.name, "type": a.type, "aliases": list(a.aliases),
                "metadata": _loads(a.metadata) if a.metadata else {},
                "files": {e.path: e.local_path for e in a.manifest.contents},
            })
        elif kind == "alert":
            run.alerts.append({"title": rec.alert.title, "text": rec.alert.text, "level": rec.alert.level})
        elif kind == "exit":
            run.exit_code, run.complete = rec.exit.exit_code, True
    return run


def find_runs(wandb_dir) -> list[Path]:
    """Offline run folders (`offline-run-*` holding a `.wandb` file) under a wandb dir, oldest first.

    Accepts the `dir=` given to `wandb.init` (runs live in its `wandb/` subfolder) or that subfolder itself.
    """
    root = Path(wandb_dir)
    found = {p.parent for p in root.glob("**/offline-run-*/*.wandb")}
    return sorted(found, key=lambda p: p.name)
