"""The one place that knows revisions: discovery, grid selection, resolution, prefetch, release.

A revision is a named training checkpoint: a branch of a hub repo (`step1000`, `step1000-tokens2B`)
or a subfolder of a local folder (`model=local model.repo=<folder>`). Hub discovery uses
`list_repo_refs` when online (the list is saved in the hub cache for later offline runs); offline it
uses the saved list, else the refs in the local cache merged with the model's known schedule.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

from harness.errors import HarnessError
from harness.hubcache import cache_dir as hub_cache

log = logging.getLogger("harness.revisions")

# What a probe run needs from a hub revision (no optimizer states, no duplicate .bin weights).
PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
            "tokenizer*", "special_tokens_map.json", "vocab.json", "merges.txt"]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]  # only when a revision has no safetensors
_STEP = re.compile(r"^(?:step|checkpoint|ckpt|global_step|iter)?[-_]?(\d+)(?:-tokens(\d+)B)?$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REFS_FILE = ".ct-refs.json"  # our saved list_repo_refs answer, inside the repo's cache folder
_hash_memo: dict[tuple, str] = {}
_warned: set[str] = set()
_cache_lock = threading.RLock()  # a release must not race a prefetch that is linking shared blobs


@dataclass(frozen=True)
class Revision:
    name: str
    step: int | None
    tokens: int | None


@dataclass(frozen=True)
class Resolved(Revision):
    source: str  # what to pass to from_pretrained: a repo id, or a local folder
    hub_revision: str | None  # None for local folders
    commit: str | None  # 40-hex hub commit, None for local folders
    path: Path  # the local snapshot folder
    weights_hash: str | None  # sha256 over the weight files
    duplicate_of: str | None = None  # an earlier revision of the grid with the same weights

    @property
    def revision(self) -> Revision:
        return Revision(self.name, self.step, self.tokens)


class RevisionError(HarnessError, LookupError):
    """A revision, grid or repo that does not exist; the message is one line."""


# ---------------------------------------------------------------- environment

def offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _repo_dir(repo: str, cache: Path) -> Path:
    return Path(cache) / ("models--" + repo.replace("/", "--"))


def _is_local(repo) -> bool:
    return bool(repo) and Path(str(repo)).expanduser().is_dir()


def _cfg(model_cfg):
    """Accept a plain dict as well as the composed DictConfig (attribute access below)."""
    from omegaconf import DictConfig, OmegaConf

    cfg = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(dict(model_cfg))
    if OmegaConf.is_missing(cfg, "repo") or not cfg.get("repo"):
        raise RevisionError(f"model {cfg.get('name')} needs model.repo=<hub repo id or checkpoint folder>")
    repo = str(cfg.repo)
    if (repo.startswith(("/", ".", "~")) or repo.count("/") != 1) and not _is_local(repo):
        raise RevisionError(f"{cfg.get('name')}: checkpoint folder '{repo}' does not exist")
    return cfg


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


# ---------------------------------------------------------------- names, steps, tokens

def parse_step(name: str) -> tuple[int | None, int | None]:
    """(step, billions of tokens in the name) from `step1000`, `step1000-tokens2B`, `1000`, `checkpoint-1000`."""
    m = _STEP.match(name)
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


def make_revision(model_cfg, name: str) -> Revision:
    tps = model_cfg.get("tokens_per_step")
    step, btokens = parse_step(name)
    if name == "main":
        step = model_cfg.get("main_step")  # None where main is not on the schedule (OLMoE's annealed branch)
    tokens = step * tps if step is not None and tps else None
    if btokens is not None:
        if tokens is None:
            tokens = btokens * 10**9  # no tokens_per_step: trust the name
        elif abs(tokens / 1e9 - btokens) > 1 + 0.02 * btokens:  # names floor to whole B; allow ~2% drift
            _warn_once(f"{model_cfg.get('name')}: revision {name} names {btokens}B tokens but "
                       f"step x tokens_per_step = {tokens / 1e9:.1f}B; check model.tokens_per_step")
    return Revision(name, step, tokens)


def _sort_key(r: Revision):
    return (r.step is None, r.step or 0, r.name)


def schedule_names(model_cfg) -> list[str]:
    """Expand the model's known checkpoint schedule (`model.schedule`) into revision names."""
    spec = model_cfg.get("schedule")
    if not spec:
        return []
    kind = spec.get("kind")
    if kind == "pythia":  # step0, powers of two to 512, then every 1000 to the end
        last = spec.get("last", 143000)
        steps = [0] + [2**i for i in range(10)] + list(range(1000, last + 1, 1000))
    elif kind == "every":
        every, last = spec["every"], spec["last"]
        steps = list(range(spec.get("first", every), last + 1, every)) + list(spec.get("extra") or [])
    else:
        raise RevisionError(f"{model_cfg.get('name')}: unknown schedule kind '{kind}' (valid: pythia, every)")
    template = spec.get("name", "step{step}")
    tps = model_cfg.get("tokens_per_step") or 0
    rename = {int(k): v for k, v in (spec.get("rename") or {}).items()}
    names = [rename.get(s) or template.format(step=s, btokens=s * tps // 10**9) for s in sorted(set(steps))]
    return names


# ---------------------------------------------------------------- discovery

def _is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")))


def _local_names(model_cfg) -> list[str]:
    root = Path(str(model_cfg.repo)).expanduser()
    names = [d.name for d in root.iterdir() if d.is_dir() and _is_checkpoint(d)]
    if not names:
        raise RevisionError(f"{model_cfg.name}: no saved checkpoints under {root} "
                            "(expected subfolders like step0/ holding config.json + *.safetensors)")
    return names


def _cached_refs(repo: str, cache: Path) -> list[str]:
    refs = _repo_dir(repo, cache) / "refs"
    if not refs.is_dir():
        return []
    return [str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file() and not p.name.startswith(".")]


def _saved_refs(repo: str, cache: Path) -> dict | None:
    f = _repo_dir(repo, cache) / _REFS_FILE
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _fetch_refs(model_cfg, cache: Path) -> dict | None:
    """list_repo_refs, saved to the cache; None when the hub cannot be reached."""
    from huggingface_hub import list_repo_refs
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = list_repo_refs(model_cfg.repo)
    except RepositoryNotFoundError as e:
        raise RevisionError(f"{model_cfg.name}: repo '{model_cfg.repo}' not found on the hub") from e
    except Exception as e:  # noqa: BLE001 - network down, hub error: fall back to the cache
        log.warning("%s: cannot list revisions of %s on the hub (%s); using the local cache",
                    model_cfg.name, model_cfg.repo, type(e).__name__)
        return None
    saved = {r.name: r.target_commit for r in list(refs.branches) + list(refs.tags)}
    f = _repo_dir(model_cfg.repo, cache) / _REFS_FILE
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=0, sort_keys=True))
        tmp.replace(f)
    except OSError as e:
        log.warning("%s: cannot save the revision list to %s (%s)", model_cfg.name, f, e)
    return saved


def available(model_cfg, *, cache_dir=None) -> list[Revision]:
    """Every revision the model has, sorted by step (names without a step last)."""
    model_cfg = _cfg(model_cfg)
    if _is_local(model_cfg.repo):
        names = _local_names(model_cfg)
    else:
        cache = Path(cache_dir or hub_cache())
        refs = None if offline() else _fetch_refs(model_cfg, cache)
        if refs is None:
            refs = _saved_refs(model_cfg.repo, cache)  # the full list from an earlier online run
        if refs is not None:
            names = sorted(set(refs) | set(_cached_refs(model_cfg.repo, cache)))
        else:
            cached, known = _cached_refs(model_cfg.repo, cache), schedule_names(model_cfg)
            names = sorted(set(cached) | set(known))
            if not names:
                raise RevisionError(f"{model_cfg.name}: no revisions known for '{model_cfg.repo}': the hub is "
                                    f"offline and nothing is cached in {cache}")
            _warn_once(f"{model_cfg.name}: hub offline; revision names come from the local cache ({len(cached)}) "
                       f"and the known schedule ({len(known)}), not from the hub")
    revs = sorted({n: make_revision(model_cfg, n) for n in names}.values(), key=_sort_key)
    steps = {r.step for r in revs if r.name != "main"}
    # Pythia's main == its last step: keep one name (the step) so grids hold no alias.
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


def _missing(model_cfg, name: str, revs, text: str | None = None) -> RevisionError:
    text = text or f"{model_cfg.get('name')} has no revision '{name}'"
    return RevisionError(f"{text} ({_nearest(name, [r.name for r in revs])})")


def find(model_cfg, revs: list[Revision], name: str) -> Revision:
    for r in revs:
        if r.name == name:
            return r
    if name == "main" and model_cfg.get("main_step") is not None:
        return make_revision(model_cfg, "main")  # dropped from the list as an alias of the last step
    raise _missing(model_cfg, name, revs)


def _log_spaced(revs: list[Revision], n: int) -> list[Revision]:
    """n picks nearest to log-spaced targets in log(step+1), always the first and the last, no repeats."""
    stepped = [r for r in revs if r.step is not None]
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
    if kind == "all":
        out = pool
    elif kind == "final":
        stepped = [r for r in pool if r.step is not None]
        out = stepped[-1:] or [r for r in pool if r.name == "main"] or pool[-1:]
    elif kind == "log":
        out = _log_spaced(pool, int(grid_cfg.get("n") or 10))
    elif kind == "paper" and not model_cfg.get("paper_revisions"):
        # A model the study did not run: its design instead, 10 log-spaced revisions.
        log.info("%s: no study grid (it ran pythia-1b, olmo-1b-0724, olmoe-1b-7b-0924); 10 log-spaced revisions",
                 model_cfg.get("name"))
        out = _log_spaced(pool, 10)
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


# ---------------------------------------------------------------- resolution

def _file_hash(f: Path) -> str:
    """A weight file's sha256: a hub blob's own name when it is one (LFS blobs are named by sha256)."""
    real = f.resolve()
    if f.is_symlink() and _SHA256.match(real.name):
        return real.name
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _hash_memo:
        h = hashlib.sha256()
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _hash_memo[key] = h.hexdigest()
    return _hash_memo[key]


def weight_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def weights_hash(folder: Path) -> str | None:
    files = weight_files(folder)
    if not files:
        return None
    lines = "".join(f"{f.name}\t{_file_hash(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def resolve(model_cfg, rev: Revision, *, download: bool = True, cache_dir=None) -> Resolved:
    """Files on disk for one revision. download=False uses only what is already cached."""
    model_cfg = _cfg(model_cfg)
    base = {f.name: getattr(rev, f.name) for f in fields(Revision)}
    if _is_local(model_cfg.repo):
        path = Path(str(model_cfg.repo)).expanduser().resolve() / rev.name
        if not _is_checkpoint(path):
            raise _missing(model_cfg, rev.name, available(model_cfg),
                           f"{model_cfg.name} has no saved checkpoint '{rev.name}' in {path.parent}")
        return Resolved(**base, source=str(path), hub_revision=None, commit=None, path=path,
                        weights_hash=weights_hash(path))
    from huggingface_hub import snapshot_download

    cache = Path(cache_dir or hub_cache())
    local_only = offline() or not download
    try:
        with _cache_lock:
            path = Path(snapshot_download(model_cfg.repo, revision=rev.name, allow_patterns=PATTERNS,
                                          cache_dir=cache, local_files_only=local_only))
            if not weight_files(path) and not local_only:  # an old revision with .bin weights only
                path = Path(snapshot_download(model_cfg.repo, revision=rev.name, cache_dir=cache,
                                              allow_patterns=PATTERNS + BIN_PATTERNS))
    except Exception as e:  # OSError (offline, not cached), HfHubHTTPError, validation errors
        raise _resolve_error(model_cfg, rev.name, cache, local_only, e) from e
    if not weight_files(path):
        raise RevisionError(f"{model_cfg.name} revision '{rev.name}' has no weight files in {path}")
    commit = path.name if _COMMIT.match(path.name) else None
    return Resolved(**base, source=str(model_cfg.repo), hub_revision=rev.name, commit=commit, path=path,
                    weights_hash=weights_hash(path))


def _resolve_error(model_cfg, name, cache, local_only, e) -> RevisionError:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(e, RepositoryNotFoundError):
        return RevisionError(f"{model_cfg.name}: repo '{model_cfg.repo}' not found on the hub")
    try:
        known = available(model_cfg, cache_dir=cache)
    except RevisionError:
        known = []
    if isinstance(e, RevisionNotFoundError) or name not in {r.name for r in known}:
        return _missing(model_cfg, name, known)
    why = ("the hub is offline (HF_HUB_OFFLINE)" if offline() else "download=False" if local_only
           else f"the hub cannot be reached ({type(e).__name__})")
    cached = [r for r in _cached_revisions(model_cfg, cache) if r.name != name]
    msg = f"{model_cfg.name} revision '{name}' is not in the hub cache {cache} and {why}"
    return _missing(model_cfg, name, cached, msg + ("; cached" if cached else "; nothing of this repo is cached"))


def _cached_revisions(model_cfg, cache) -> list[Revision]:
    return [make_revision(model_cfg, n) for n in sorted(_cached_refs(model_cfg.repo, cache))]


def mark_duplicates(resolved):
    """Yield each Resolved, with duplicate_of set where its weights equal an earlier one's (Pythia step0 == step1).

    A generator, so the Prefetcher can mark revisions as they stream in."""
    seen: dict[str, str] = {}
    for r in resolved:
        first = seen.setdefault(r.weights_hash, r.name) if r.weights_hash else r.name
        if first != r.name:
            log.warning("revision %s has the same weights as %s (hash %s...)", r.name, first, r.weights_hash[:12])
            r = replace(r, duplicate_of=first)
        yield r


class Prefetcher:
    """Iterate Resolved revisions in order; while revision i is yielded (and probed), i+1 downloads."""

    def __init__(self, model_cfg, revs: list[Revision], *, download: bool = True, cache_dir=None, resolver=None):
        self.model_cfg, self.revs = model_cfg, list(revs)
        self._resolve = resolver or (lambda r: resolve(model_cfg, r, download=download, cache_dir=cache_dir))
        self.pending: str | None = None  # name of the revision being prefetched now
        self.future = None

    def __iter__(self):
        return mark_duplicates(self._stream())

    def _stream(self):
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        try:
            self.future = pool.submit(self._resolve, self.revs[0]) if self.revs else None
            for i in range(len(self.revs)):
                res = self.future.result()
                nxt = self.revs[i + 1] if i + 1 < len(self.revs) else None
                self.future = pool.submit(self._resolve, nxt) if nxt else None
                self.pending = nxt.name if nxt else None
                yield res
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a half-done download is left to finish cleanly


def release(resolved: Resolved) -> int:
    """Delete a hub revision's snapshot and the blobs no other snapshot uses; returns bytes freed.

    Local-folder revisions are never deleted. The refs stay, so the name is still known offline.
    """
    path = Path(resolved.path) if resolved.path else None
    if resolved.hub_revision is None or path is None or path.parent.name != "snapshots" or not path.is_dir():
        return 0
    blobs, refs = path.parent.parent / "blobs", path.parent.parent / "refs"
    aliases = [p.name for p in refs.rglob("*") if p.is_file() and p.name != resolved.hub_revision
               and p.read_text().strip() == path.name]
    if aliases:  # e.g. Pythia main == step143000: one snapshot, and the other name may still be used
        log.info("keeping %s: the snapshot is also revision %s", resolved.name, ", ".join(aliases))
        return 0
    with _cache_lock:
        def used(snap: Path) -> set[Path]:
            return {f.resolve() for f in snap.rglob("*") if f.is_symlink()}

        mine = used(path)
        others = set().union(*[used(s) for s in path.parent.iterdir() if s != path and s.is_dir()])
        shutil.rmtree(path)
        freed = 0
        for b in mine - others:
            if b.parent == blobs.resolve() and b.is_file():
                freed += b.stat().st_size
                b.unlink()
    log.info("released %s (%s): %.1f MB freed", resolved.name, resolved.commit, freed / 1e6)
    return freed
