"""Command-line checks that run before Hydra: launcher plugins that are not installed, shard ranges.

Kept free of heavy imports: `python -m harness` runs this before composing anything.
"""
from __future__ import annotations

import difflib
import importlib.util
import re

from harness.common.paths import CONF_DIR

CONF = CONF_DIR

# hydra/launcher=<name> -> (the plugin module it needs, the extra that installs it, the plugin's package)
PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "launchers", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "launchers", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "launchers", "hydra-submitit-launcher"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray", "hydra-ray-launcher"),
}
_LAUNCHER = re.compile(r"^\+*hydra/launcher=(\S+)$")
_RANGE = re.compile(r"^(\+*revisions\.shard)=range\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*/\s*(\d+)$")
_NO_LAUNCH = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_plugin(args: list[str]) -> str | None:
    """One line naming the extra to install when the chosen launcher's plugin is missing (Hydra would only
    fail later, with a traceback); None when it is installed, or when nothing is launched (--cfg, --help)."""
    if _NO_LAUNCH.intersection(a.split("=")[0] for a in args):
        return None
    for a in args:
        m = _LAUNCHER.match(a)
        if m and m.group(1) in PLUGINS:
            module, extra, package = PLUGINS[m.group(1)]
            if not _installed(module):
                return (f"hydra/launcher={m.group(1)} needs the {extra} extra: pip install -e '.[{extra}]' "
                        f"(or pip install {package})")
    return None


def expand_shards(args: list[str]) -> list[str]:
    """`revisions.shard=range(a,b)/n` -> `revisions.shard=a/n,a+1/n,...,b-1/n` (a Hydra sweep over shards)."""
    out = []
    for a in args:
        m = _RANGE.match(a)
        if m:
            key, lo, hi, n = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
            a = f"{key}=" + ",".join(f"{i}/{n}" for i in range(lo, hi)) if hi > lo else a
        out.append(a)
    return out


_GROUP = re.compile(r"^\+*([a-z_]+(?:/[a-z_]+)?)=([^=]+)$")


# Options our Hydra plugin registers instead of a yaml (hydra_plugins/circuit_trajectories_launcher/presets.py).
REGISTERED = {"probe": ("all",)}


def unknown_option(args: list[str]) -> str | None:
    """One line for `group=option` naming an option that has no conf/<group>/<option>.yaml (Hydra prints the
    whole search path over many lines): the closest name and the valid ones. Sweeps (a,b) and lists ([a,b])
    are checked item by item; launcher names are missing_plugin's business."""
    for a in args:
        m = _GROUP.match(a)
        if not m or m.group(1) == "hydra/launcher" or not (CONF / m.group(1)).is_dir():
            continue
        group, value = m.group(1), m.group(2).strip()
        if any(t in value for t in ("${", "(", "null")):  # interpolations, sweep functions, unsetting
            continue
        valid = sorted([p.stem for p in (CONF / group).glob("*.yaml")] + list(REGISTERED.get(group, ())))
        for name in filter(None, (v.strip() for v in value.strip("[]").split(","))):
            if name not in valid:
                near = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
                hint = f"did you mean {near[0]}? " if near else ""
                return f"{group}={name}: no such option ({hint}valid: {', '.join(valid)})"
    return None
