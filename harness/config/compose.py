"""Compose conf/config.yaml with Hydra's compose API, from anywhere: also inside a program that is itself a Hydra
app (a training script under @hydra.main, the zoo's builds), whose global Hydra state is set aside and restored."""
from __future__ import annotations

from collections.abc import Sequence


def compose(overrides: Sequence[str] = ()):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    from harness.common.paths import CONF_DIR

    outer = GlobalHydra.instance()
    backup = get_gh_backup() if outer.is_initialized() else None
    if backup is not None:
        outer.clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    finally:
        if backup is not None:
            restore_gh_from_backup(backup)
