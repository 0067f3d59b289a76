"""Let conf/hydra/launcher/<name>.yaml replace the launcher plugin's config of the same name.

A plugin registers its launcher config in Hydra's ConfigStore (e.g. hydra/launcher/joblib). Our yaml presets
use the same names so that users type the options they know, and the yaml is found first; but Hydra 1.3 then
"automatically matches" the yaml against the ConfigStore entry: a deprecation warning in every process that
composes the config (each job of a sweep), and an error for keys the plugin's dataclass lacks (our
submitit_local's `array_parallelism`). So, for our app only, this plugin drops the shadowed ConfigStore
entries. It runs after every plugin module registered its configs (search path plugins are instantiated
after the scan) and before any config is composed; jobs receive the ConfigStore state of the launching
process, so they never see the dropped entries either.
"""
from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONF = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/ (this file: hydra_plugins/<pkg>/)


def _ours(search_path: ConfigSearchPath) -> bool:
    """Is our conf/ on the search path (`file://<dir>` or a bare directory; pkg:// and structured:// are not)?"""
    for element in search_path.get_path():
        path = element.path or ""
        if path.startswith("file://"):
            path = path[len("file://"):]
        if path and "://" not in path and Path(path).resolve() == CONF:
            return True
    return False


class LauncherPresets(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not _ours(search_path):  # another Hydra app in this environment keeps the plugins' configs
            return
        launchers = ConfigStore.instance().repo.get("hydra", {}).get("launcher", {})
        for preset in (CONF / "hydra" / "launcher").glob("*.yaml"):
            launchers.pop(preset.name, None)
