"""The result store: one folder per (experiment, model, revision), written atomically.

    <results_dir>/<experiment>/<model>/<revision>/heads.parquet   one row per (layer, head)
    <results_dir>/<experiment>/<model>/<revision>/summary.json    scalars + provenance; written last, it marks
                                                                  a complete result and names heads.parquet's sha256
    <results_dir>/<experiment>/<model>/<revision>/.lock           taken by the job probing the revision

Many jobs may share a store (sharded sweeps, requeued tasks, the same sweep launched twice): a job probes a
revision while holding its lock and re-checks reuse once it has the lock, so the second job to get there
reuses the first one's result instead of writing another.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from harness.common.errors import HarnessError
from harness.common.locks import flock
from harness.common import files
from harness.common.files import atomic_write, file_sha256, write_text

log = logging.getLogger("harness.results.store")

# The store's file layout; results of another layout are recomputed. (A probe's or a batch's code change is in the
# reuse key through their `version`s, see harness.run.job.)
SCHEMA_VERSION = 2


class StoreError(HarnessError, OSError):
    """The result store cannot be written (read-only, a file in the way, disk full)."""


def check_writable(folder: Path, probe_bytes: int = 1 << 16) -> None:
    """Fail before any work when `folder` cannot take a result: create it and write (then delete) a probe file
    about the size of a small result, so a full disk is found before hours of probing, not after."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.") as f:
            f.write(b"\0" * probe_bytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StoreError(f"cannot write results to {folder}: {e.strerror or e}; free space there or set "
                         "paths.results_dir to a writable folder") from None


def revision_dir(results_dir, experiment: str, model: str, revision: str) -> Path:
    return Path(results_dir) / experiment / model / revision


def heads_frame(results: dict, n_layers: int, n_heads: int) -> pd.DataFrame:
    """Probe results -> one row per head, columns `layer`, `head`, `<probe>.<metric>`."""
    layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    cols = {"layer": layer.ravel(), "head": head.ravel()}
    for probe, res in results.items():
        for metric, arr in res.heads.items():
            arr = np.asarray(arr)
            if arr.shape != (n_layers, n_heads):
                raise ValueError(f"probe {probe}: metric {metric} has shape {arr.shape}, expected {(n_layers, n_heads)}")
            cols[f"{probe}.{metric}"] = arr.ravel()
    return pd.DataFrame(cols)


def flat_scalars(results: dict) -> dict[str, float]:
    return {f"{probe}.{k}": v for probe, res in results.items() for k, v in res.scalars.items()}


def _write_summary(folder: Path, summary: dict) -> None:
    write_text(folder / "summary.json", json.dumps(summary, indent=2, default=_json))


def write(folder: Path, heads: pd.DataFrame, summary: dict) -> None:
    """A result, atomic as a pair: the old summary.json goes first (from then on the folder holds no complete
    result), heads.parquet replaces the old one, and summary.json, which records the new parquet's sha256,
    comes last. A crash at any point leaves the old complete result, no complete result (recomputed by the
    next run), or the new one, never a new parquet beside an old summary."""
    try:
        (folder / "summary.json").unlink(missing_ok=True)
        digest = file_sha256(atomic_write(folder / "heads.parquet", lambda tmp: heads.to_parquet(tmp, index=False)))
        _write_summary(folder, {"schema": SCHEMA_VERSION, **summary, "heads_sha256": digest})
    except OSError as e:  # a full disk, a lost mount: temporary files are gone (_atomic), no summary marks it done
        raise StoreError(f"cannot write the result in {folder}: {e.strerror or e}; earlier revisions are kept, "
                         "this one is recomputed by the next run") from None


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read(folder: Path) -> tuple[pd.DataFrame, dict]:
    return pd.read_parquet(folder / "heads.parquet"), json.loads((folder / "summary.json").read_text())


def summary(folder: Path) -> dict | None:
    """A complete result's summary (its heads.parquet is the one it names), else None."""
    try:
        s = json.loads((Path(folder) / "summary.json").read_text())
        s["provenance"]  # noqa: B018 - a summary without provenance is not ours
        digest = s.get("heads_sha256")  # absent in results written before it was recorded
        if digest is not None and file_sha256(Path(folder) / "heads.parquet") != digest:
            return None
        if digest is None and not (Path(folder) / "heads.parquet").exists():
            return None
    except (FileNotFoundError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return s


def failed(folder: Path) -> bool:
    s = summary(folder)
    return bool(s and s.get("status") == "failed")


def reusable(folder: Path, repo: str, weights_hash: str | None, probe_hash: str, commit: str | None = None) -> bool:
    """A complete result for the same model, checkpoint and probe config.

    The checkpoint matches by `commit` (the hub commit, or a local folder's file fingerprint: both known
    before any download) or by `weights_hash` (known once the files are here)."""
    s = summary(folder)
    if s is None or s.get("schema") != SCHEMA_VERSION or s.get("status") == "failed":  # failed: try again
        return False
    prov = s["provenance"]
    if prov.get("repo") != repo or prov.get("probe_hash") != probe_hash or prov.get("superseded") is not None:
        return False  # superseded: a crashed live attempt's result, left out of the analysis until replaced
    return bool((commit and prov.get("commit") == commit) or (weights_hash and prov.get("weights_hash") == weights_hash))


def complete(folder: Path, repo: str, probe_hash: str) -> bool:
    """Some complete result of this model and probe config (for checking that a whole grid is done); a revision
    recorded as failed counts: the analysis leaves it out and lists it."""
    s = summary(folder)
    return bool(s and s.get("schema") == SCHEMA_VERSION and s["provenance"].get("repo") == repo
                and s["provenance"].get("probe_hash") == probe_hash)


def locked(folder: Path):
    """Hold the revision's lock (<folder>/.lock; blocks while another job holds it)."""
    return flock(Path(folder) / ".lock")


def record_duplicates(folders: list[Path]) -> list[str]:
    """Set provenance.duplicate_of over a whole grid (folders in grid order): a revision whose weights hash
    equals an earlier one's is its duplicate. Jobs that probe parts of a grid (shards) cannot see this; the
    job that completes the grid calls it. Rewrites only summaries that change; returns their revisions."""
    seen: dict[str, str] = {}
    changed = []
    for folder in folders:
        with locked(folder):
            s = summary(folder)
            if s is None:
                continue
            prov = s["provenance"]
            name, h = prov.get("revision") or folder.name, prov.get("weights_hash")
            first = seen.setdefault(h, name) if h else name
            want = first if first != name else None
            if prov.get("duplicate_of") != want:
                prov["duplicate_of"] = want
                _write_summary(folder, s)  # heads.parquet and its sha256 stay as they are
                changed.append(name)
    return changed


def record_labels(folders: list[Path], **labels) -> list[str]:
    """Set provenance labels that are no part of the reuse key (the model's family and seed) over a grid, so
    that a result reused from an earlier run carries the current config's; returns the revisions rewritten."""
    changed = []
    for folder in folders:
        with locked(folder):
            s = summary(folder)
            if s is None or all(s["provenance"].get(k) == v for k, v in labels.items()):
                continue
            s["provenance"].update(labels)
            _write_summary(folder, s)  # heads.parquet and its sha256 stay as they are
            changed.append(s["provenance"].get("revision") or folder.name)
    return changed


def mark_superseded(model_dir: Path, after_step: int) -> list[str]:
    """A training run resumed from `after_step`: results it stored above that step (the attempt that crashed) are
    marked superseded; the analysis leaves them out until the resumed run stores those steps again."""
    gone = []
    for f in sorted(Path(model_dir).glob("*/summary.json")):
        with locked(f.parent):
            s = summary(f.parent)
            prov = (s or {}).get("provenance", {})
            if s is None or prov.get("step") is None or prov["step"] <= after_step or prov.get("superseded"):
                continue
            prov["superseded"] = after_step
            _write_summary(f.parent, s)
            gone.append(prov.get("revision") or f.parent.name)
    return gone
