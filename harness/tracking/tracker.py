"""Experiment tracking: one W&B run per job, one history row (+ per-head table, heatmaps, artifact) per revision.

Online when an API key is configured, otherwise offline; offline runs are uploaded later with `wandb sync <dir>`
and can be read back without network by `harness.wandb_offline`. `NullTracker` (logger=none) does nothing.

Logged per revision (see `Tracker.log_revision`):
    history row       tokens, step, <probe>.<metric> scalars      (x axis: `tokens`, via define_metric)
    heatmap/<metric>  wandb.Image (layer x head), caption = revision; same key every row -> one panel with a slider
    artifact          type "probe-results", name "<group>-<run name>-<revision>", heads.parquet, metadata = provenance
Logged once at the end (see `Tracker.log_findings`; no per-revision table keys, which made one panel each):
    summary           findings/<key>: lag, milestones, verdicts, BOS-free layers, final circuit, sentences
    findings          wandb.Table, one row per finding (milestone, lag, shape, screen level, PR lead, sentence)
    trajectory        wandb.Table, one row per (revision, layer, head) with every metric
    findings/bos_layers  wandb.Image, BOS-classified heads per layer x revision (F1)
"""
from __future__ import annotations

import configparser
import functools
import json
import logging
import math
import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from harness.analysis import run_findings as F

log = logging.getLogger("harness.tracking.tracker")

DEFAULT_BASE_URL = "https://api.wandb.ai"
ARTIFACT_TYPE = "probe-results"
INIT_TIMEOUT_S = 30.0  # how long an online init may take before we fall back to offline


# ----------------------------------------------------------------------------------------------- mode / API key

def _settings_file() -> dict[str, str]:
    """The global wandb settings file ([default] section), as `wandb login` / `wandb online` write it."""
    cfg_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.join(cfg_dir, "settings"))
        return dict(parser.items("default"))
    except (OSError, configparser.Error):
        return {}


def _netrc_has_key(host_url: str) -> bool:
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    netloc = urlsplit(host_url).netloc
    if not netloc or not os.path.isfile(path):
        return False
    try:
        creds = netrc.netrc(path).authenticators(netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def api_key_configured() -> bool:
    """True when wandb would find credentials: env, ~/.netrc ($NETRC) for the server host, or the settings file.

    Only checks presence; the key is never read into a variable that outlives this call, printed or stored.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    settings = _settings_file()
    base_url = os.environ.get("WANDB_BASE_URL") or settings.get("base_url") or DEFAULT_BASE_URL
    return _netrc_has_key(base_url) or bool(settings.get("api_key"))


def wandb_mode(requested: str = "auto") -> str:
    """Resolve `auto` to "online" (an API key is configured) or "offline"; "disabled"/"offline" pass through.

    "online" without any key also becomes "offline" (wandb would otherwise prompt or fail).
    With `auto`, an explicit WANDB_MODE=offline/disabled in the environment is honoured.
    """
    requested = (requested or "auto").lower()
    if requested in ("disabled", "offline"):
        return requested
    if requested == "dryrun":
        return "offline"
    if requested not in ("auto", "online"):
        raise ValueError(f"logger mode must be auto, online, offline or disabled, not {requested!r}")
    if requested == "auto":
        env_mode = os.environ.get("WANDB_MODE", "").lower()
        if env_mode in ("offline", "dryrun", "disabled"):
            return "disabled" if env_mode == "disabled" else "offline"
    if api_key_configured():
        return "online"
    if requested == "online":
        log.warning("wandb: mode=online but no API key configured (WANDB_API_KEY, ~/.netrc); logging offline")
    return "offline"


# ----------------------------------------------------------------------------------------------- helpers

_ARTIFACT_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def artifact_name(*parts) -> str:
    """Join parts with '-' and keep only wandb's allowed artifact-name chars (alphanumerics, '-', '_', '.')."""
    name = "-".join(str(p) for p in parts if p not in (None, ""))
    name = _ARTIFACT_BAD.sub("_", name).strip("._-") or "probe-results"
    return name[:128]


def _jsonable(obj):
    """Provenance -> plain JSON (numpy scalars, paths, tuples; NaN/inf -> None) for artifact metadata."""
    def fix(x):
        if isinstance(x, dict):
            return {str(k): fix(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [fix(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x
    return fix(json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o))))


def _scalar(v):
    """Numpy scalar -> python; everything else unchanged (wandb serialises NaN/inf itself)."""
    return v.item() if isinstance(v, np.generic) else v


class HeatmapRenderer:
    """Layer x head heatmaps as PIL images, cheaply: matplotlib's Agg canvas on a bare `Figure` (no pyplot state,
    nothing to close), one figure per grid shape reused across metrics and revisions (only data, colour limits
    and title change: ~20 ms an image instead of ~80 ms with a fresh figure + tight_layout), returned as raw RGB
    pixels so that wandb encodes the PNG once."""

    def __init__(self):
        self._figs: dict = {}  # (n_layers, n_heads) -> (figure, image artist, title, axes)

    def _figure(self, shape):
        if shape not in self._figs:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            n_layers, n_heads = shape
            fig = Figure(figsize=(min(2.5 + 0.25 * n_heads, 8.0), min(2.0 + 0.2 * n_layers, 8.0)), dpi=72)
            FigureCanvasAgg(fig)
            fig.subplots_adjust(left=0.16, right=0.86, bottom=0.15, top=0.88)
            ax = fig.add_subplot()
            im = ax.imshow(np.zeros(shape), aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            title = ax.set_title("", fontsize=8)
            fig.colorbar(im, ax=ax)
            self._figs[shape] = (fig, im, title, ax)
        return self._figs[shape]

    def render(self, grid: np.ndarray, title: str, xlabel: str = "head"):
        from PIL import Image

        fig, im, text, ax = self._figure(grid.shape)
        ax.set_xlabel(xlabel)
        finite = grid[np.isfinite(grid)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        im.set_data(np.ma.masked_invalid(grid))  # NaN cells stay blank
        im.set_clim(lo, hi)
        text.set_text(title)
        fig.canvas.draw()
        return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")


def _plain(frame):
    """pandas nullable columns (Int64 tokens with <NA>) -> plain objects with None, which wandb.Table accepts."""
    import pandas as pd

    out = frame.reset_index(drop=True).copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.api.extensions.ExtensionDtype) and out[col].hasnans:
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _layer_image(grid: np.ndarray, model: str):
    """F1 as a picture: BOS-classified heads per layer (rows) and revision (columns, training order)."""
    return HeatmapRenderer().render(grid, f"{model}: BOS heads per layer x revision", xlabel="revision (index)")


# ----------------------------------------------------------------------------------------------- trackers

def _survives_wandb(method):
    """Tracking never stops a job: if W&B fails mid-run (its service process died, a full disk under its dir),
    warn once and stop tracking; the result store, written first, is complete either way."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure inside wandb
            if self.mode != "disabled":
                log.warning("wandb stopped working (%s: %s); tracking is off for the rest of this job, the result "
                            "store is complete", type(e).__name__, (str(e).splitlines() or [""])[0][:200])
            self.mode, self._broken = "disabled", True
    return wrapper


class NullTracker:
    """logger=none: accepts the same arguments and calls, records nothing."""

    def __init__(self, **kwargs):
        pass

    def log_revision(self, **kwargs) -> None:
        pass

    def log_findings(self, findings, trajectory) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass

    @property
    def run_dir(self):
        return None

    @property
    def url_or_path(self) -> str:
        return "not tracked (logger=none)"


class Tracker:
    """One wandb run; `log_revision` once per checkpoint, `finish` at the end (idempotent)."""

    def __init__(self, *, project: str, entity: str | None = None, group: str, job_type: str,
                 name: str | None = None, config: dict, mode: str = "auto", dir: str, tags=(),
                 reinit: str = "finish_previous", run_id: str | None = None):
        import wandb  # imported here so that logger=none never pays for it

        self._wandb = wandb
        self._finished = self._broken = False
        self._heatmap = HeatmapRenderer()
        self.group, self.name = group, name
        root = Path(dir).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        # wandb reads these once per process; without them debug logs and staged artifact files land under ~
        # and `wandb sync` of artifacts breaks later.
        os.environ.setdefault("WANDB_CACHE_DIR", str(root / ".cache"))
        os.environ.setdefault("WANDB_DATA_DIR", str(root / ".data"))
        self.mode = wandb_mode(mode)
        kwargs = {"project": project, "entity": entity, "group": group, "job_type": job_type, "name": name,
                  "config": config, "dir": str(root), "tags": list(tags or ()) or None, "reinit": reinit}
        if run_id:  # a live run resumed after a crash continues its W&B run
            kwargs.update(id=run_id, resume="allow")
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S), **kwargs)
        except Exception as e:  # any online failure: keep the data locally
            if self.mode != "online":
                raise
            log.warning("wandb: online init failed (%s: %s); logging offline instead", type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else "")
            self.mode = "offline"
            # wandb's telemetry exporter would report the same refusal again at exit, twice: once is enough.
            logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
            self.run = wandb.init(mode="offline", **kwargs)
        self.run.define_metric("tokens")
        self.run.define_metric("*", step_metric="tokens")
        self._run_dir = self._find_run_dir()

    def _find_run_dir(self) -> Path | None:
        if self.mode == "disabled":
            return None
        sync_dir = getattr(self.run.settings, "sync_dir", None)
        return Path(sync_dir) if sync_dir else Path(self.run.dir).parent

    @property
    def run_dir(self) -> Path | None:
        """The local run folder (`<dir>/wandb/offline-run-...` or `run-...`); None when disabled."""
        return self._run_dir

    @property
    def url_or_path(self) -> str:
        if self._broken:
            return f"{self._run_dir} (incomplete: wandb stopped mid-job; the result store has everything)"
        if self.mode == "disabled":
            return "not tracked (wandb disabled)"
        if self.mode == "online" and getattr(self.run, "url", None):
            return self.run.url
        return f"{self._run_dir} (offline; upload with: wandb sync {self._run_dir})"

    @_survives_wandb
    def log_revision(self, *, revision: str, step: int | None, tokens: int | None, scalars: dict,
                     heads, parquet_path, provenance: dict) -> None:
        """One history row (tokens, step, scalars + heads table + heatmaps) and one artifact for a revision."""
        if self.mode == "disabled":
            return
        wandb = self._wandb
        row: dict = {}
        if tokens is not None:
            row["tokens"] = int(tokens)
        if step is not None:
            row["step"] = int(step)
        row.update({k: _scalar(v) for k, v in scalars.items()})
        if heads is not None and len(heads):  # the per-head values go to the `trajectory` table at the end
            row.update(self._heatmaps(heads, revision))
        self.run.log(row)  # one call: scalars and media share one history row (and one x value)

        path = Path(parquet_path) if parquet_path is not None else None
        if path is None or not path.is_file():
            log.warning("wandb: %s: no parquet file at %s, no artifact logged", revision, path)
            return
        art = wandb.Artifact(artifact_name(self.group, self.name or self.run.name or self.run.id, revision),
                             type=ARTIFACT_TYPE, metadata=_jsonable(provenance or {}))
        art.add_file(str(path), name=path.name)
        self.run.log_artifact(art)

    def _heatmaps(self, heads, revision: str) -> dict:
        import pandas as pd

        out = {}
        metrics = [c for c in heads.columns
                   if c not in ("layer", "head") and pd.api.types.is_numeric_dtype(heads[c])
                   and not pd.api.types.is_bool_dtype(heads[c])]
        if not metrics:
            return out
        layer, head = heads["layer"].to_numpy(int), heads["head"].to_numpy(int)
        for metric in metrics:
            grid = np.full((layer.max() + 1, head.max() + 1), np.nan)
            grid[layer, head] = heads[metric].to_numpy(float)
            out[f"heatmap/{metric}"] = self._wandb.Image(self._heatmap.render(grid, f"{metric} @ {revision}"),
                                                         caption=revision)
        return out

    @_survives_wandb
    def log_findings(self, findings: dict, trajectory) -> None:
        """The model's findings (harness.analysis) at the end of the job: summary values, a `findings` table,
        ONE `trajectory` table and the F1 layer x revision image, in one history row (W&B files it at the last
        revision's `tokens`, the step metric)."""
        if self.mode == "disabled":
            return
        wandb = self._wandb
        self.run.summary.update(F.summary_values(findings))
        row = {F.TABLE: wandb.Table(columns=F.COLUMNS, data=F.table_rows(findings))}
        traj = _plain(trajectory)
        row[F.TRAJECTORY] = table = wandb.Table(dataframe=traj)
        if len(traj) > wandb.Table.MAX_ROWS:  # a logged table keeps its first MAX_ROWS rows; an artifact keeps all
            log.warning("wandb: trajectory has %d rows, the `trajectory` panel shows %d; all rows are in the "
                        "artifact %s", len(traj), wandb.Table.MAX_ROWS, self._trajectory_artifact(table))
        counts = np.asarray(findings.get("bos_layer_counts") or [], dtype=float)
        if counts.size:
            row[F.BOS_LAYERS] = wandb.Image(_layer_image(counts.T, findings.get("model", "")),
                                            caption=", ".join(findings["revisions"]))
        self.run.log(row)

    def _trajectory_artifact(self, table) -> str:
        art = self._wandb.Artifact(artifact_name(self.group, self.name or self.run.name or self.run.id, "trajectory"),
                                   type="trajectory")
        art.add(table, "trajectory")
        self.run.log_artifact(art)
        return art.name

    def finish(self, exit_code: int = 0) -> None:
        """Close the run, then tear the wandb service down so the offline `.wandb` file is complete."""
        if self._finished:
            return
        self._finished = True
        self._heatmap = HeatmapRenderer()  # drop the cached figures
        # Another run open in this process (the trainer's, beside a live run): the service must stay up for it.
        current = self._wandb.run
        others = current is not None and getattr(current, "id", None) != getattr(self.run, "id", None)
        try:
            if not self._broken:
                self.run.finish(exit_code=exit_code)
        finally:
            if others:
                return
            try:
                self._wandb.teardown()
            except Exception as e:  # noqa: BLE001 - a dead service cannot be torn down; nothing is left to save
                log.debug("wandb teardown: %s", e)


class TrainerRunTracker:
    """Scalars only, prefixed, into the run the trainer already has open (`wandb.run`), as rows of their own (a
    row joined to the trainer's next one would be overwritten by a second probe before it, and land at a later
    step). No metric is defined: where the trainer syncs its step metric (the HF Trainer's `train/global_step`),
    W&B files these rows at the trainer's current step. Closes nothing."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def _run(self):
        import wandb

        return wandb.run

    def log_revision(self, *, scalars: dict, tokens=None, step=None, **_) -> None:
        run = self._run()
        if run is None:
            return
        row = {f"{self.prefix}{k}": v for k, v in scalars.items() if _scalar(v) is not None}
        row[f"{self.prefix}tokens"] = tokens
        run.log(row)

    def log_findings(self, findings, trajectory) -> None:
        run = self._run()
        if run is not None:
            run.summary.update({f"{self.prefix}{k}": v for k, v in F.summary_values(findings).items()})

    def finish(self, exit_code: int = 0) -> None:
        pass

    run = None
    url_or_path = "the trainer's W&B run"
