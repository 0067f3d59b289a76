"""Where the project's own files are: the Hydra configs every entry point composes.

The configs live in the repository's top-level `conf/`; an installed wheel carries the same files as the
package data `harness/conf/` (pyproject.toml maps the package `harness.conf` onto `conf/`). A checkout and an
editable install (`pip install -e .`) read `<repo>/conf`; a wheel install (`pip install git+<repo>`) reads
`<site-packages>/harness/conf`.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # harness/


def conf_dir(package: Path = _PACKAGE) -> Path:
    """`harness/conf` where the package carries it (a wheel install), else the checkout's `conf/`."""
    shipped = package / "conf"
    return shipped if (shipped / "config.yaml").is_file() else package.parent / "conf"


CONF_DIR = conf_dir()
