"""What makes a folder a checkpoint: a config.json beside safetensors weights (or, for old revisions,
pytorch_model*.bin). One definition for discovery, hashing and error messages."""
from __future__ import annotations

from pathlib import Path


def weight_files(folder) -> list[Path]:
    folder = Path(folder)
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def is_checkpoint(folder) -> bool:
    return (Path(folder) / "config.json").is_file() and bool(weight_files(folder))
