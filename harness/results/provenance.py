"""Provenance recorded with every result: what ran, on which weights, with which code."""
from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata

PACKAGES = ("circuit-trajectories", "torch", "transformers", "lightning", "huggingface_hub",
            "safetensors", "numpy", "wandb", "hydra-core")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able config."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
