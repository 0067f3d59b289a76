"""Command-line checks that run before Hydra: launcher plugins that are not installed, shard ranges, config group
options and keys that do not exist (Hydra reports those over many lines).

Kept free of heavy imports: `python -m harness` runs this before composing anything; only a key override makes
`unknown_key` compose the config (Hydra, a fraction of a second).
"""
from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path

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
# Options Hydra's core plugins register in code (hydra/_internal/core_plugins), not as files of its conf folder.
HYDRA_BUILTIN = {"hydra/launcher": ("basic",), "hydra/sweeper": ("basic",)}


def _hydra_conf() -> Path | None:
    """Hydra's own conf folder (hydra/conf: hydra/job_logging/*.yaml, ...), found without importing Hydra."""
    try:
        spec = importlib.util.find_spec("hydra")
    except (ImportError, ValueError):
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "conf" if spec and spec.submodule_search_locations \
        else None


def _group_dirs(group: str) -> list[Path]:
    hydra = _hydra_conf() if group == "hydra" or group.startswith("hydra/") else None
    return [d for d in (CONF / group, hydra / group if hydra else None) if d is not None and d.is_dir()]


def group_options(group: str) -> list[str] | None:
    """The options of a config group, read from the conf folders (ours; Hydra's own for `hydra/<g>`) plus those
    registered in code; None when there is no such group."""
    dirs = _group_dirs(group)
    extra = set(REGISTERED.get(group, ())) | set(HYDRA_BUILTIN.get(group, ()))
    if not dirs and not extra:
        return None
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml")} | extra)


def _subgroups(parent: str) -> list[str]:
    """The config groups below `parent` (`hydra` -> hydra/env, hydra/launcher, ...)."""
    names = {f"{parent}/{d.name}" for base in _group_dirs(parent) for d in base.iterdir()
             if d.is_dir() and not d.name.startswith("_")}
    return sorted(names | {g for g in HYDRA_BUILTIN if g.startswith(parent + "/")})


def unknown_option(args: list[str]) -> str | None:
    """One line for `group=option` naming an option that has no yaml in the group's conf folders (Hydra prints
    the whole search path over many lines), or a group that does not exist: the closest name and the valid
    ones. Every group is checked, Hydra's own (hydra/launcher, hydra/job_logging, ...) too; sweeps (a,b) and
    lists ([a,b]) item by item. Whether a launcher's plugin is installed is missing_plugin's business."""
    for a in args:
        m = _GROUP.match(a)
        if not m:
            continue
        group, value = m.group(1), m.group(2).strip()
        valid = group_options(group)
        if valid is None:
            if "/" not in group:  # `key=value`, not a group: unknown_key's business
                continue
            parent = group.rsplit("/", 1)[0]
            groups = _subgroups(parent)
            near = difflib.get_close_matches(group, groups, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]}? " if near else ""
            return f"{group}={value}: no such config group ({hint}valid: {', '.join(groups) or 'none'})"
        if any(t in value for t in ("${", "(", "null")):  # interpolations, sweep functions, unsetting
            continue
        for name in filter(None, (v.strip() for v in value.strip("[]").split(","))):
            if name not in valid:
                near = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
                hint = f"did you mean {near[0]}? " if near else ""
                return f"{group}={name}: no such option ({hint}valid: {', '.join(valid)})"
    return None


_OTHER_CONFIG = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for x in (e, e.__cause__) if x is not None for line in str(x).splitlines()
             if line.strip() not in ("", "None")]
    return "; ".join(dict.fromkeys(lines))


def unknown_key(args: list[str]) -> str | None:
    """One line for an override Hydra would reject with several: one it cannot parse, a key the composed config
    does not have (`runner.batchsize=4`; Hydra says "not in struct"; the closest key and the valid ones), an
    add or delete that does not fit (`+runner.device=cpu`). Composes the config as the job will (the first value
    of a sweep, and each value of a group sweep in turn), only when there is a key override to check."""
    if _OTHER_CONFIG & {a.split("=")[0] for a in args}:
        return None
    lines = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    if not lines:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    base, variants, keys, changes = [], [], [], False
    for line in lines:
        try:
            o = parser.parse_override(line)
        except HydraException as e:
            return f"{line}: cannot parse it ({_one_line(e)})"
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):  # Hydra's own node: not in the job's config
            continue
        prefix = line[:len(line) - len(line.lstrip("+~"))]
        values = [None]
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except HydraException:  # range(...), glob(...): the job's own overrides, composed by Hydra
                return None
        as_line = lambda v: line if v is None else f"{prefix}{key}={v}"
        if group_options(key) is not None:
            base.append(as_line(values[0]))
            variants += [(len(base) - 1, as_line(v)) for v in values[1:]]
        elif prefix or o.is_delete():
            base.append(as_line(values[0]))
            changes = True
        else:
            keys.append((line, key))
    if not keys and not changes:
        return None  # group choices only: unknown_option has checked them
    for i, alt in [(None, None), *variants]:
        overrides = list(base)
        if i is not None:
            overrides[i] = alt
        try:
            cfg = _compose(overrides)
        except HydraException as e:
            return _one_line(e)
        for line, key in keys:
            problem = _missing(cfg, line, key)
            if problem:
                return problem
    return None


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _missing(cfg, line: str, key: str) -> str | None:
    """`line` sets `key`: None where the composed config has that key, else one line saying what it has."""
    from omegaconf import OmegaConf

    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        section = ".".join(parts[:i])
        if not OmegaConf.is_dict(node):
            return f"{line}: no such option ({section} is a value, not a section)"
        if part not in node.keys():  # keys(), not `in`: a mandatory value (???) is there, but `in` says no
            from harness.config import schema

            have = [str(k) for k in node.keys()]
            known = schema.known_options(section, cfg) if section else []
            if part in known:
                value = line.split("=", 1)[1]
                return (f"{line}: not in this config ({section}: {', '.join(have)}); it is an option of "
                        f"{section}, add it with +{key}={value}")
            valid = have + [k for k in known if k not in have]
            near = difflib.get_close_matches(part, valid, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]}? " if near else ""
            return f"{line}: no such option ({hint}valid: {', '.join(valid)})"
        node = node._get_node(part)
    return None
