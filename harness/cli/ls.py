"""List what the harness can run: `python -m harness ls models|revisions|probes [overrides...]`.

    python -m harness ls models
    python -m harness ls revisions model=pythia-1b revisions=paper
    python -m harness ls revisions model=local model.repo=/runs/mine
    python -m harness ls probes

Errors are one line on stderr (exit code 2), never a traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys

from omegaconf import OmegaConf

from harness.common.errors import HarnessError
from harness.common.paths import CONF_DIR

CONF = CONF_DIR
COMMANDS = ("models", "revisions", "probes")
NEEDED = {"model", "revisions", "paths"}  # groups `ls` reads; a missing other group is dropped, not fatal


class LsError(HarnessError):
    pass


def compose(overrides: list[str]):
    """The job's own config (conf/config.yaml + overrides), as `python -m harness` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import MissingConfigException

    overrides = list(overrides)
    for _ in range(10):
        try:
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                return hydra_compose(config_name="config", overrides=overrides)
        except MissingConfigException as e:
            group = (e.missing_cfg_file or "").split("/")[0]
            if e.options is not None and group:  # an unknown option of a group
                if group in NEEDED or any(o.split("=")[0].lstrip("+~") == group for o in overrides):
                    name = e.missing_cfg_file.split("/", 1)[-1]
                    raise LsError(f"unknown {group} '{name}' (available: {', '.join(e.options)})") from None
                overrides.append(f"~{group}")  # listing needs no data/probe/logger config
            else:
                raise
    raise LsError("cannot compose conf/config.yaml")


def human(n: int | None) -> str:
    """2097152 -> 2.1M, 6291456000 -> 6.3B."""
    if n is None:
        return "?"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _table(rows: list[tuple], header: tuple) -> str:
    rows = [tuple(str(c) for c in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def ls_models(_overrides) -> str:
    rows = []
    for f in sorted((CONF / "model").glob("*.yaml")):
        m = OmegaConf.load(f)
        shape = "x".join(str(m.get(k)) for k in ("layers", "heads", "d_head")) if m.get("layers") else "?"
        repo = "<folder>" if OmegaConf.is_missing(m, "repo") else m.get("repo")
        rows.append((f.stem, repo, m.get("arch"), shape, human(m.get("tokens_per_step")), m.get("dtype")))
    return _table(rows, ("model", "repo", "arch", "layers x heads x d_head", "tokens/step", "dtype"))


def ls_revisions(overrides) -> str:
    from harness.sources import revisions

    cfg = compose(overrides)
    revs = revisions.available(cfg.model)
    grid = revisions.select(cfg.model, cfg.revisions, revs)
    kind = cfg.revisions.get("select", "all")
    head = f"{cfg.model.name} ({cfg.model.repo}), revisions={kind}: {len(grid)} of {len(revs)}"
    rows = [(r.name, "-" if r.step is None else r.step, human(r.tokens)) for r in grid]
    return head + "\n" + _table(rows, ("name", "step", "tokens"))


def _describe(target: str) -> tuple[str, str]:
    """(first docstring line, columns) of a probe class, imported lazily; robust to missing modules."""
    module, _, cls = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), cls)
    except Exception as e:  # noqa: BLE001 - a missing or broken plug-in must not break the listing
        return f"(cannot import {target}: {type(e).__name__})", ""
    doc = (obj.__doc__ or "").strip().splitlines()
    cols = getattr(obj, "columns", None)
    return (doc[0] if doc else ""), (", ".join(map(str, cols)) if cols else "")


def ls_probes(_overrides) -> str:
    lines = []
    for f in sorted((CONF / "probe").glob("*.yaml")):
        p = OmegaConf.to_container(OmegaConf.load(f))
        if "defaults" in p:
            lines.append(f"{f.stem}: = {', '.join(map(str, p['defaults']))}")
        for name, spec in p.items():
            if isinstance(spec, dict) and "_target_" in spec:
                doc, cols = _describe(spec["_target_"])
                lines.append(f"{f.stem}: {name} ({spec['_target_']}) {doc}".rstrip())
                if cols:
                    lines.append(f"    columns: {cols}")
    return "\n".join(lines) or "(no probes in conf/probe)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m harness ls {{{'|'.join(COMMANDS)}}} [overrides...]", file=sys.stderr)
        return 2
    try:
        print({"models": ls_models, "revisions": ls_revisions, "probes": ls_probes}[argv[0]](argv[1:]))
    except Exception as e:  # noqa: BLE001 - HarnessError, Hydra and OmegaConf errors: one line, no traceback
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
