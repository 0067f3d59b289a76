"""Three changes to Hydra's config store, for our app only (conf/ on the search path):

`${seeded:<base>,<seed>}`: the resolver model presets name their seed variants with (harness.common.seeds),
registered here, when our config is composed, rather than when the harness is imported.

`probe=all`: every probe plug-in file in conf/probe/ (a yaml with a `_target_`; presets, which hold a defaults
list, are not plug-ins), found when the config is composed, so that a new probe is one file plus one yaml.

Launcher presets: let conf/hydra/launcher/<name>.yaml replace the launcher plugin's config of the same name.

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

import yaml
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin

from harness.common import seeds
from harness.common.paths import CONF_DIR as CONF  # the repository's conf/, or the wheel's harness/conf/


def _file_dirs(search_path: ConfigSearchPath) -> list[str]:
    """The folders on the search path (`file://<dir>` or a bare directory; pkg:// and structured:// are not)."""
    out = []
    for element in search_path.get_path():
        path = element.path or ""
        if path.startswith("file://"):
            path = path[len("file://"):]
        if path and "://" not in path:
            out.append(path)
    return out


def _ours(search_path: ConfigSearchPath) -> Path | None:
    """Our conf/ on the search path: the project's, or a copy of it (a folder with config.yaml and probe/)."""
    for d in map(Path, _file_dirs(search_path)):
        if d.resolve() == CONF or ((d / "config.yaml").is_file() and (d / "probe").is_dir()):
            return d
    return None


def plugin_probes(folder: Path) -> list[str]:
    """The probe plug-in files of a conf/probe folder: single-key yamls whose value has a `_target_`."""
    names = []
    for f in sorted(folder.glob("*.yaml")):
        try:
            node = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # Hydra reports a broken file itself when it is selected
        if isinstance(node, dict) and len(node) == 1 and "_target_" in (next(iter(node.values())) or {}):
            names.append(f.stem)
    return names


class LauncherPresets(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        conf = _ours(search_path)
        if conf is None:  # another Hydra app in this environment keeps the plugins' configs
            return
        seeds.register()
        ConfigStore.instance().store(group="probe", name="all", node={"defaults": plugin_probes(conf / "probe")},
                                     provider="circuit-trajectories")
        launchers = ConfigStore.instance().repo.get("hydra", {}).get("launcher", {})
        for preset in (conf / "hydra" / "launcher").glob("*.yaml"):
            launchers.pop(preset.name, None)
