"""The typed config schema: every option a job reads is checked once the config is composed, before any
revision is listed or checkpoint loaded, so a typo costs seconds, not a sweep. A bad option is reported as one
line naming the key, the value and what is allowed, e.g. `runner.batch_size=-3: must be an integer >= 1 or "auto"`.

Runner, data and paths have fixed schemas (pydantic). Probe plug-ins and the analysis rules are checked
against their constructor's signature: an option's default says its type (a float default takes any number,
an int default an integer >= 0, a bool default true/false); an option whose default is None, or whose choices are
a `Literal`, says it with its annotation (`n: int | None = None`, `positions: Literal["last", "all"] = "last"`),
so a new probe is covered without editing this file.
"""
from __future__ import annotations

import difflib
import inspect
import math
import re
import typing
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from harness.common.errors import HarnessError

DTYPES = ("float32", "float16", "bfloat16")
DEVICE = re.compile(r"(cpu|gpu|cuda|cuda:\d+|mps|auto)")


class ConfigError(HarnessError, ValueError):
    pass


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rule(test, allowed: str):
    """A field type whose failure message is `must be <allowed>` (pydantic's own messages name Python types)."""
    def check(v):
        if not test(v):
            raise ValueError(f"must be {allowed}")
        return v
    return Annotated[Any, AfterValidator(check)]


Bool = rule(lambda v: isinstance(v, bool), "true or false")
Int0 = rule(lambda v: is_int(v) and v >= 0, "an integer >= 0")
Int1 = rule(lambda v: is_int(v) and v >= 1, "an integer >= 1")
OptInt0 = rule(lambda v: v is None or (is_int(v) and v >= 0), "an integer >= 0 or null")
Device = rule(lambda v: isinstance(v, str) and DEVICE.fullmatch(v), "cpu, cuda, cuda:<N>, gpu, mps or auto")
Dtype = rule(lambda v: v in DTYPES, "float32, float16 or bfloat16")
BatchSize = rule(lambda v: v == "auto" or (is_int(v) and v >= 1), 'an integer >= 1 or "auto"')


class Runner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: Device
    dtype: Dtype
    batch_size: BatchSize
    progress_bar: Bool
    keep_checkpoints: Bool


class Data(BaseModel):
    """The options every batch builder shares; its other options are checked against its signature."""
    model_config = ConfigDict(extra="allow")
    n: Int1 = 1
    seq_len: Int1 = 1
    vocab_lo: Int0 = 0
    vocab_hi: Int1 = 1
    seed: Int0 = 0
    prepend_bos: Bool = False
    bos_id: OptInt0 = None


def _safe_name(v) -> bool:
    """A single path component: results go to <results_dir>/<experiment_name>/<model.name>/."""
    return isinstance(v, str) and v not in ("", ".", "..") and not re.search(r"[/\\\x00]", v) and ":" not in v[:2]


SAFE_NAME = "a plain folder name (no '/', '\\', '..' or absolute path)"


def _fail(key: str, value, msg: str):
    shown = "null" if value is None else value
    raise ConfigError(f"{key}={shown}: {msg}")


def _check_model(section: str, schema: type[BaseModel], values: dict) -> None:
    try:
        schema.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join([section, *map(str, err["loc"])])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = ", ".join(schema.model_fields)
            msg = f"unknown option{_closest(str(err['loc'][-1]), schema.model_fields)} (valid: {valid})"
        _fail(key, err.get("input"), msg)


def _closest(word: str, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {near[0]}?" if near else ""


def like_default(key: str, value, default, annotation=inspect.Parameter.empty) -> None:
    """A value of the type its default has (only numbers, bools and lists of numbers are checked); a None default
    or a `Literal` annotation defers to the annotation."""
    if typing.get_origin(annotation) is Literal:
        if value not in typing.get_args(annotation):
            _fail(key, value, f"must be one of {', '.join(map(str, typing.get_args(annotation)))}")
    elif default is None:
        like_annotation(key, value, annotation)
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            _fail(key, value, "must be true or false")
    elif is_int(default):
        if not (is_int(value) and value >= 0):
            _fail(key, value, f"must be an integer >= 0 (default {default})")
    elif isinstance(default, float):
        if not is_number(value):
            _fail(key, value, f"must be a number (default {default})")
    elif isinstance(default, (list, tuple)) and default and all(is_number(d) for d in default):
        if not isinstance(value, (list, tuple)) or not value:
            _fail(key, value, f"must be a list of numbers (default {list(default)})")
        for i, (v, d) in enumerate(zip(value, [default[0]] * len(value))):
            like_default(f"{key}[{i}]", v, d)


def like_annotation(key: str, value, annotation) -> None:
    """An option that defaults to None: null, or a value of the annotation's scalar type (bool, int or float)."""
    kinds = [a for a in typing.get_args(annotation) or (annotation,) if a in (bool, int, float)]
    if value is None or not kinds:
        return
    ok = {bool: isinstance(value, bool), int: is_int(value) and value >= 0, float: is_number(value)}
    if not any(ok[k] for k in kinds):
        allowed = {bool: "true or false", int: "an integer >= 0", float: "a number"}
        _fail(key, value, f"must be {' or '.join(allowed[k] for k in kinds)} or null")


def check_signature(section: str, target, values: dict, skip=("name",)) -> None:
    """Options of a plug-in (probe, batch builder, analysis rules) against its constructor's parameters."""
    try:
        params = inspect.signature(target, eval_str=True).parameters
    except NameError:  # an annotation that names a type imported only for type checkers: check by defaults only
        params = inspect.signature(target).parameters
    open_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    known = [k for k, p in params.items() if k not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in params or key in skip:
            if not open_kw:
                _fail(f"{section}.{key}", value, f"unknown option of {getattr(target, '__name__', target)}"
                      f"{_closest(key, known)} (valid: {', '.join(known)})")
            continue
        like_default(f"{section}.{key}", value, params[key].default, params[key].annotation)


def _target(section: str, values: dict):
    from hydra.utils import get_object

    path = values.get("_target_")
    try:
        return get_object(path)
    except Exception as e:  # noqa: BLE001 - an import error of a plug-in is the user's to fix
        raise ConfigError(f"{section}._target_={path}: cannot import it ({type(e).__name__})") from None


def resolved(cfg: DictConfig, key: str):
    """One section, interpolations resolved; a missing or unresolvable value is a one-line error."""
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=True)
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True) if OmegaConf.is_config(node) else node
    except OmegaConfBaseException as e:
        full = getattr(e, "full_key", None) or key
        raise ConfigError(f"{full}: {str(e).splitlines()[0]} (set it on the command line, e.g. {full}=...)") from None


def check_names(cfg: DictConfig, keys=("experiment_name", "model.name")) -> None:
    for key in keys:
        value = resolved(cfg, key)
        if value is not None and not _safe_name(value):
            _fail(key, value, f"must be {SAFE_NAME}")


def check_analysis(cfg: DictConfig) -> None:
    from harness.analysis.rules import Rules

    rules = resolved(cfg, "analysis") or {}
    for key in ("bos", "induction", "prev_token"):
        if key in rules:
            _fail(f"analysis.{key}", rules[key], f"head-class thresholds are set once for probes and findings: "
                  f"thresholds.{key}={rules[key]}")
    check_signature("analysis", Rules, rules, skip=())
    for i, f in enumerate(rules.get("bos_fractions") or []):
        if not 0 <= f <= 1:
            _fail(f"analysis.bos_fractions[{i}]", f, "must be a number between 0 and 1")
    check_thresholds(cfg)


def check_thresholds(cfg: DictConfig) -> None:
    """`thresholds.*`: selectivities (x) above 0; the sink regime a fraction of heads."""
    for key, value in (resolved(cfg, "thresholds") or {}).items():
        if not (is_number(value) and value > 0):
            _fail(f"thresholds.{key}", value, "must be a number > 0")
        if key == "sink_regime" and not value <= 1:
            _fail(f"thresholds.{key}", value, "must be a fraction of heads, between 0 and 1")


def validate(cfg: DictConfig) -> None:
    """Everything `python -m harness` reads, before it lists a revision or loads a checkpoint."""
    resolved(cfg, "model")  # e.g. model=local without model.repo
    check_names(cfg)
    _check_model("runner", Runner, resolved(cfg, "runner"))
    data = resolved(cfg, "data")
    _check_model("data", Data, data)
    check_signature("data", _target("data", data), data)
    for name, probe in (resolved(cfg, "probe") or {}).items():
        if probe is not None:
            check_signature(f"probe.{name}", _target(f"probe.{name}", probe), probe)
    check_analysis(cfg)


def validate_store_args(cfg: DictConfig) -> None:
    """What `harness analyze` and `harness report` read: the experiment, its model folders, the rules."""
    check_names(cfg, ("experiment_name",))
    models = resolved(cfg, "models") or []
    for i, name in enumerate([models] if isinstance(models, str) else models):
        if not _safe_name(name):
            _fail(f"models[{i}]", name, f"must be {SAFE_NAME}")
    check_analysis(cfg)
