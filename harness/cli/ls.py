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

from harness.common import seeds
from harness.common.errors import HarnessError
from harness.common.paths import CONF_DIR
from harness.common.units import human

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


def _table(rows: list[tuple], header: tuple) -> str:
    rows = [tuple(str(c) for c in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _shape(m) -> str:
    """layers x heads x d_head, the key/value heads in brackets where fewer (GQA): 36x16(4)x128."""
    if not m.get("layers"):
        return "?"
    kv = m.get("kv_heads")
    heads = f"{m.get('heads')}({kv})" if kv and kv != m.get("heads") else str(m.get("heads"))
    return f"{m.get('layers')}x{heads}x{m.get('d_head')}"


def _per_step(m) -> str:
    tps = m.get("tokens_per_step")
    if OmegaConf.is_dict(tps):  # by stage: 4.2M/2.1M/4.2M
        return "/".join(human(tps[k]) for k in sorted(tps, key=int))
    if tps is None and m.get("tokens_per_checkpoint"):
        return human(m.get("tokens_per_checkpoint")) + "/ckpt"
    return human(tps)


def _checkpoints(m) -> str:
    """How many checkpoints the model has: its known schedule, else the revision list a run saved in the hub
    cache, else the refs the cache holds (never asks the hub)."""
    from harness.sources import revisions

    if OmegaConf.is_missing(m, "repo") or revisions.is_local(m.get("repo")):
        return "-"
    try:
        known = revisions.schedule_names(m)
        if known:  # with main where it is the end of training and not a listed step (Amber's ckpt_359)
            return str(len(revisions.place(m, known + (["main"] if revisions.main_kind(m) == "end" else []))))
        cache = revisions.hub_cache()
        saved = revisions.saved_refs(m.get("repo"), cache)
        if saved is not None:
            return f"{len(saved)} (hub list)"
        cached = revisions.cached_refs(m.get("repo"), cache)
        return f"{len(cached)} (cached)" if cached else "?"
    except Exception:  # noqa: BLE001 - a broken preset shows '?' here; `ls revisions model=<it>` says why
        return "?"


def ls_models(_overrides) -> str:
    seeds.register()  # the presets are read here without Hydra
    rows = []
    for f in sorted((CONF / "model").glob("*.yaml")):
        m = OmegaConf.load(f)
        repo = "<folder>" if OmegaConf.is_missing(m, "repo") else m.get("repo")
        family = f"{m.get('family')}/{m.get('seed')}" if m.get("family") else "-"
        rows.append((f.stem, repo, m.get("arch"), family, _shape(m), _per_step(m), _checkpoints(m), m.get("dtype")))
    return _table(rows, ("model", "repo", "arch", "family/seed", "layers x heads(kv) x d_head", "tokens/step",
                         "checkpoints", "dtype"))


def _stage(r) -> str:
    if r.stage is None:
        return "-"
    return f"{r.stage}" + (f"/ingredient{r.ingredient}" if r.ingredient is not None else "")


MAIN_NOTES = {
    "annealed": "main is annealed, not the end of pretraining: left out of the log, final and paper grids and of "
                "trajectories",
    "no-weights": "main holds no weights: left out",
}


def ls_revisions(overrides) -> str:
    from harness.config.schema import check_model, resolved
    from harness.sources import revisions

    cfg = compose(overrides)
    check_model(resolved(cfg, "model"))  # e.g. a seed the suite has no run for
    revs = revisions.available(cfg.model)
    grid = revisions.select(cfg.model, cfg.revisions, revs)
    order = {r.name: i for i, r in enumerate(revs, 1)}
    kind = cfg.revisions.get("select", "all")
    head = f"{cfg.model.name} ({cfg.model.repo}), revisions={kind}: {len(grid)} of {len(revs)}"
    note = MAIN_NOTES.get(revisions.main_kind(cfg.model))
    rows = [(order.get(r.name, "-"), r.name, _stage(r), "-" if r.step is None else r.step, human(r.tokens))
            for r in grid]
    return head + (f"; {note}" if note else "") + "\n" + _table(rows, ("#", "name", "stage", "step", "tokens"))


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
