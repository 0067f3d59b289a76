"""Where the project's own files are: the Hydra configs every entry point composes."""
from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
