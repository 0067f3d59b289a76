"""The result store: one folder per (experiment, model, revision), written atomically.

    <results_dir>/<experiment>/<model>/<revision>/heads.parquet   one row per (layer, head)
    <results_dir>/<experiment>/<model>/<revision>/summary.json    scalars + provenance
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

# 2: the study's exact batch draws and valid rows (issue 10); results of another version are recomputed.
SCHEMA_VERSION = 2


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


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write(folder: Path, heads: pd.DataFrame, summary: dict) -> None:
    """heads.parquet first, summary.json last: a summary marks a complete result."""
    _atomic(folder / "heads.parquet", lambda tmp: heads.to_parquet(tmp, index=False))
    summary = {"schema": SCHEMA_VERSION, **summary}
    _atomic(folder / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, default=_json)))


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read(folder: Path) -> tuple[pd.DataFrame, dict]:
    return pd.read_parquet(folder / "heads.parquet"), json.loads((folder / "summary.json").read_text())


def reusable(folder: Path, repo: str, weights_hash: str, probe_hash: str) -> bool:
    """A complete result for the same model, checkpoint and probe config."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        prov = summary["provenance"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return False
    same = (summary.get("schema") == SCHEMA_VERSION and prov.get("repo") == repo
            and prov.get("weights_hash") == weights_hash and prov.get("probe_hash") == probe_hash)
    return same and (folder / "heads.parquet").exists()
