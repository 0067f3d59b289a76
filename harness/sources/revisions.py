"""Which revisions a job probes: discovery, grid selection, and the job's part of the grid (shard / only).

A revision is a named training checkpoint: a branch of a hub repo (`step1000`, `step1000-tokens2B`)
or a subfolder of a local folder (`model=local model.repo=<folder>`). Hub discovery uses
`list_repo_refs` when online (the list is saved in the hub cache for later offline runs); offline it
uses the saved list, else the refs in the local cache merged with the model's known schedule.
Getting a revision's files (resolution, prefetch, release) is `harness.sources.checkpoints`.
"""
from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.common import files
from harness.common.errors import HarnessError
from harness.sources import names as naming
from harness.sources import stages
from harness.sources.folders import is_checkpoint
from harness.sources.hubcache import cache_dir as hub_cache
from harness.sources.hubcache import repo_folder
from harness.sources.stages import main_kind

log = logging.getLogger("harness.sources.revisions")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_REFS_FILE = ".ct-refs.json"  # our saved list_repo_refs answer, inside the repo's cache folder
_warned: set[str] = set()
_fetched: dict[str, dict[str, str]] = {}  # repo -> {revision: commit} as list_repo_refs answered in this process


@dataclass(frozen=True)
class Revision:
    name: str
    step: int | None  # the step in the name (it restarts in later stages), or the checkpoint index (ckpt_<i>)
    tokens: int | None  # tokens trained since the start, later stages placed after the earlier ones
    stage: int | None = field(default=None, kw_only=True)  # None: an unstaged name (pretraining)
    ingredient: int | None = field(default=None, kw_only=True)  # a parallel branch within its stage


class RevisionError(HarnessError, LookupError):
    """A revision, grid or repo that does not exist; the message is one line."""


# ---------------------------------------------------------------- environment

def offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def local_only(model_cfg) -> bool:
    """Never ask the hub about this model: the hub is offline, the repo is a folder, or the model config says
    `offline: true` (the embedded suites exist only in the local hub cache, by design)."""
    return offline() or is_local(model_cfg.get("repo")) or bool(model_cfg.get("offline"))


def is_local(repo) -> bool:
    return bool(repo) and Path(str(repo)).expanduser().is_dir()


def model_config(model_cfg):
    """Accept a plain dict as well as the composed DictConfig (attribute access below)."""
    from omegaconf import DictConfig, OmegaConf

    cfg = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(dict(model_cfg))
    if OmegaConf.is_missing(cfg, "repo") or not cfg.get("repo"):
        raise RevisionError(f"model {cfg.get('name')} needs model.repo=<hub repo id or checkpoint folder>")
    repo = str(cfg.repo)
    if (repo.startswith(("/", ".", "~")) or repo.count("/") != 1) and not is_local(repo):
        raise RevisionError(f"{cfg.get('name')}: checkpoint folder '{repo}' does not exist")
    return cfg


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


# ---------------------------------------------------------------- names, stages, steps, tokens

def parse_step(name: str) -> tuple[int | None, int | None]:
    """(step, billions of tokens in the name) from `step1000`, `step1000-tokens2B`, `1000`, `checkpoint-1000`, ..."""
    n = naming.parse(name)
    return n.step, n.btokens


def make_revision(model_cfg, name: str, starts: dict[int, int | None] | None = None) -> Revision:
    """One revision from its name; `starts` (stages.stage_starts over the whole list) places a later stage's
    tokens after the earlier stages'."""
    n = naming.parse(name)
    if name == "main":
        step = model_cfg.get("main_step") if main_kind(model_cfg) == "end" else None
        n = naming.Name(step, index=step is not None and bool(model_cfg.get("tokens_per_checkpoint")))
    tokens, warning = stages.tokens(model_cfg, n, starts)
    if warning:
        _warn_once(f"{model_cfg.get('name')}: revision {name} {warning}")
    return Revision(name, n.step, tokens, stage=n.stage, ingredient=n.ingredient)


def _sort_key(r: Revision):
    """Training order: (stage, ingredient, step); unstaged names are stage 1; names without a step last."""
    return (r.step is None, r.stage or 1, r.ingredient or 0, r.step or 0, r.name)


def pretraining(r: Revision) -> bool:
    """On the pretraining trajectory (stage 1 or unstaged, with a step): what the default grids draw from."""
    return r.step is not None and (r.stage or 1) == 1


def schedule_names(model_cfg) -> list[str]:
    """Expand the model's known checkpoint schedule (`model.schedule`) into revision names."""
    try:
        return naming.schedule_names(model_cfg.get("schedule"), lambda s: stages.tokens_per_step(model_cfg, s),
                                    str(model_cfg.get("name")))
    except ValueError as e:
        raise RevisionError(str(e)) from None


# ---------------------------------------------------------------- discovery

def _local_names(model_cfg) -> list[str]:
    root = Path(str(model_cfg.repo)).expanduser()
    names = [d.name for d in root.iterdir() if d.is_dir() and is_checkpoint(d)]
    if not names:
        raise RevisionError(f"{model_cfg.name}: no saved checkpoints under {root} "
                            "(expected subfolders like step0/ holding config.json + *.safetensors)")
    return names


def cached_refs(repo: str, cache: Path) -> list[str]:
    refs = repo_folder(repo, cache) / "refs"
    if not refs.is_dir():
        return []
    return [str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file() and not p.name.startswith(".")]


def saved_refs(repo: str, cache: Path) -> dict | None:
    f = repo_folder(repo, cache) / _REFS_FILE
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _fetch_refs(model_cfg, cache: Path) -> dict | None:
    """list_repo_refs, saved to the cache; None when the hub cannot be reached."""
    from huggingface_hub import list_repo_refs
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        refs = list_repo_refs(model_cfg.repo)
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: first
        raise RevisionError(f"{model_cfg.name}: repo '{model_cfg.repo}' is gated: accept its terms on the hub, then "
                            "log in (hf auth login, or set HF_TOKEN)") from None
    except RepositoryNotFoundError as e:
        raise RevisionError(f"{model_cfg.name}: repo '{model_cfg.repo}' not found on the hub") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise RevisionError(f"{model_cfg.name}: the hub refused access to '{model_cfg.repo}' (HTTP {status}): "
                                "log in (hf auth login, or set HF_TOKEN)") from None
        log.warning("%s: cannot list revisions of %s on the hub (HTTP %s); using the local cache",
                    model_cfg.name, model_cfg.repo, status)
        return None
    except Exception as e:  # noqa: BLE001 - the network or the hub is down: fall back to the cache
        log.warning("%s: cannot list revisions of %s on the hub (%s); using the local cache",
                    model_cfg.name, model_cfg.repo, type(e).__name__)
        return None
    saved = {r.name: r.target_commit for r in list(refs.branches) + list(refs.tags)}
    _fetched[str(model_cfg.repo)] = saved
    f = repo_folder(model_cfg.repo, cache) / _REFS_FILE
    try:
        files.write_text(f, json.dumps(saved, indent=0, sort_keys=True))
    except OSError as e:
        log.warning("%s: cannot save the revision list to %s (%s)", model_cfg.name, f, e)
    return saved


def fetched_commits(repo: str) -> dict[str, str] | None:
    """{revision: commit} from this process's list_repo_refs of `repo`; None if it did not reach the hub."""
    return _fetched.get(str(repo))


def available(model_cfg, *, cache_dir=None) -> list[Revision]:
    """Every revision the model has, in training order (names without a step last)."""
    model_cfg = model_config(model_cfg)
    if is_local(model_cfg.repo):
        names = _local_names(model_cfg)
    else:
        cache = Path(cache_dir or hub_cache())
        refs = None if local_only(model_cfg) else _fetch_refs(model_cfg, cache)
        if refs is None:
            refs = saved_refs(model_cfg.repo, cache)  # the full list from an earlier online run
        if refs is not None:
            names = sorted(set(refs) | set(cached_refs(model_cfg.repo, cache)))
        else:
            cached, known = cached_refs(model_cfg.repo, cache), schedule_names(model_cfg)
            names = sorted(set(cached) | set(known))
            if not names:
                raise RevisionError(f"{model_cfg.name}: no revisions known for '{model_cfg.repo}': the hub is "
                                    f"offline and nothing is cached in {cache}")
            if not model_cfg.get("offline"):  # a local-only model has no other source: nothing to warn about
                _warn_once(f"{model_cfg.name}: hub offline; revision names come from the local cache "
                           f"({len(cached)}) and the known schedule ({len(known)}), not from the hub")
    return place(model_cfg, names)


def place(model_cfg, names) -> list[Revision]:
    """Revisions from names, in training order, later stages' tokens after the earlier stages'; `main` left out
    where it holds no weights, or where it is an alias of a step already listed (Pythia's main == step143000:
    one name, so grids hold no alias)."""
    kind = main_kind(model_cfg)
    parsed = {n: naming.parse(n) for n in names if not (n == "main" and kind == "no-weights")}
    starts = stages.stage_starts(model_cfg, parsed)
    revs = sorted((make_revision(model_cfg, n, starts) for n in parsed), key=_sort_key)
    steps = {r.step for r in revs if r.name != "main" and pretraining(r)}
    return [r for r in revs if not (r.name == "main" and r.step is not None and r.step in steps)]


# ---------------------------------------------------------------- grids

def _nearest(name: str, names) -> str:
    """The two closest steps (a typo'd step) plus the closest spellings (a typo'd name), in step order."""
    names = list(names)
    step = parse_step(name)[0]
    by_step = [n for n in names if parse_step(n)[0] is not None]
    if step is not None:
        by_step.sort(key=lambda n: abs(math.log1p(parse_step(n)[0]) - math.log1p(step)))
    near = list(dict.fromkeys((by_step[:2] if step is not None else [])
                              + difflib.get_close_matches(name, names, n=3, cutoff=0.6)))[:3]
    near.sort(key=lambda n: (parse_step(n)[0] is None, parse_step(n)[0] or 0, n))
    if near:
        return f"nearest: {', '.join(near)}"
    return f"{len(names)} available, e.g. {', '.join(names[:3])}" if names else "none available"


def missing_error(model_cfg, name: str, revs, text: str | None = None) -> RevisionError:
    text = text or f"{model_cfg.get('name')} has no revision '{name}'"
    return RevisionError(f"{text} ({_nearest(name, [r.name for r in revs])})")


def find(model_cfg, revs: list[Revision], name: str) -> Revision:
    for r in revs:
        if r.name == name:
            return r
    if name == "main" and main_kind(model_cfg) == "no-weights":
        raise RevisionError(f"{model_cfg.get('name')}: its main holds no weights (model.main=no-weights); name a "
                            f"checkpoint ({_nearest(name, [r.name for r in revs])})")
    if name == "main" and model_cfg.get("main_step") is not None and main_kind(model_cfg) == "end":
        return make_revision(model_cfg, "main")  # dropped from the list as an alias of the last step
    raise missing_error(model_cfg, name, revs)


def _log_spaced(stepped: list[Revision], n: int) -> list[Revision]:
    """n picks nearest to log-spaced targets in log(step+1), always the first and the last, no repeats."""
    if len(stepped) <= n:
        return stepped
    x = [math.log(r.step + 1) for r in stepped]
    picked: set[int] = set()
    for k in range(n):
        target = x[0] + (x[-1] - x[0]) * k / (n - 1)
        free = [i for i in range(len(stepped)) if i not in picked]
        picked.add(min(free, key=lambda i: (abs(x[i] - target), i)))
    return [stepped[i] for i in sorted(picked)]


def select(model_cfg, grid_cfg, revs: list[Revision]) -> list[Revision]:
    """The revisions of a grid (conf/revisions/*.yaml): select = all | final | paper | log | list."""
    kind = grid_cfg.get("select", "all")
    lo, hi = grid_cfg.get("min_step"), grid_cfg.get("max_step")
    filtered = lo is not None or hi is not None

    def in_range(r: Revision) -> bool:
        return not filtered or (r.step is not None and (lo is None or r.step >= lo) and (hi is None or r.step <= hi))

    pool = [r for r in revs if in_range(r)]
    # The default grids follow pretraining: never a later stage, an ingredient, or a main off the trajectory.
    trajectory = [r for r in pool if pretraining(r)]
    if kind == "all":
        out = pool
    elif kind == "final":
        end = main_kind(model_cfg) in (None, "end")
        out = trajectory[-1:] or [r for r in pool if r.name == "main" and end] or \
            [r for r in pool if r.step is None and r.name != "main"][-1:]  # folders named final/, latest/
    elif kind == "log":
        out = _log_spaced(trajectory, int(grid_cfg.get("n") or 10))
    elif kind == "paper" and not model_cfg.get("paper_revisions"):
        # A model the study did not run: its design instead, 10 log-spaced revisions.
        log.info("%s: no study grid (it ran pythia-1b, olmo-1b-0724, olmoe-1b-7b-0924); 10 log-spaced revisions",
                 model_cfg.get("name"))
        out = _log_spaced(trajectory, 10)
    elif kind in ("paper", "list"):
        names = model_cfg.get("paper_revisions") if kind == "paper" else grid_cfg.get("names")
        if not names:
            raise RevisionError("revisions=list needs names, e.g. revisions=list 'revisions.names=[step1,step8]'")
        out = sorted({n: find(model_cfg, revs, str(n)) for n in names}.values(), key=_sort_key)
        out = [r for r in out if in_range(r)]
    else:
        raise RevisionError(f"unknown revision grid kind '{kind}' (valid: all, final, paper, log, list)")
    if not out:
        raise RevisionError(f"{model_cfg.get('name')}: revisions={kind} selects nothing"
                            + (f" with min_step={lo} max_step={hi}" if filtered else ""))
    return out


# ---------------------------------------------------------------- the job's part of the grid

def parse_shard(spec) -> tuple[int, int]:
    """`<i>/<n>` -> (i, n) with 0 <= i < n."""
    m = _SHARD.match(str(spec))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise RevisionError(f"revisions.shard={spec} is not a shard: expected <i>/<n> with 0 <= i < n, e.g. "
                            f"revisions.shard=0/4 (all four: revisions.shard=\"range(0,4)/4\" in a multirun)")
    return int(m.group(1)), int(m.group(2))


def job_part(model_cfg, grid_cfg, grid: list[Revision]) -> list[Revision]:
    """This job's revisions of the grid: `revisions.only=<name>` (one of them) and/or `revisions.shard=<i>/<n>`
    (round robin: the grid's revisions i, i+n, i+2n, ...; shards of one grid never overlap and cover it)."""
    only, shard = grid_cfg.get("only"), grid_cfg.get("shard")
    if only is not None:
        grid = [find(model_cfg, grid, str(only))]  # one line with the nearest names when it is not in the grid
    if shard is not None:
        i, n = parse_shard(shard)
        if i >= len(grid):
            raise RevisionError(f"revisions.shard={shard} is outside the grid: {model_cfg.get('name')} "
                                f"revisions={grid_cfg.get('select', 'all')} has {len(grid)} revision(s), so at "
                                f"most {len(grid)} shards")
        grid = grid[i::n]
    return grid
