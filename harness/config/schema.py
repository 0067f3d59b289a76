"""The typed config schema: every option a job reads is checked once the config is composed, before any
revision is listed or checkpoint loaded, so a typo costs seconds, not a sweep. A bad option is reported as one
line naming the key, the value and what is allowed, e.g. `runner.batch_size=-3: must be an integer >= 1 or "auto"`.

Runner, data, model and the revision grid have fixed schemas (pydantic). Plug-ins (probes, the batch builder, the
analysis rules, the tracker) are checked against their constructor's signature: an option's default says its type
(a float default takes any number, an int default an integer >= 0, a bool default true/false); its annotation says
more where it has more to say: the choices (`positions: Literal["last", "all"] = "last"`), the type where the
default is None (`n: int | None = None`) and the range, in annotated-types' notation (`n: Annotated[int, Ge(1)] =
100` for a count, `share: Annotated[float, Interval(ge=0, le=1)] = 0.5`), so a new probe states its own rules
without editing this file. The shipped plug-ins' ranges are in PLUGIN_RULES, in the same notation.

Two options named as the ends of a range (`<x>lo`/`<x>hi`, `min_<x>`/`max_<x>`, `<x>_min`/`<x>_max`) must be
ordered, in any section. What depends on the model (its context length, its vocabulary, its architecture) is
checked from the revision's config.json before any weights are loaded (`check_context`).
"""
from __future__ import annotations

import difflib
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from annotated_types import Ge, Gt, Interval, Le, Lt, Predicate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from harness.common.errors import HarnessError
from harness.sources.stages import MAIN_KINDS, STAGE_STEPS

DTYPES = ("float32", "float16", "bfloat16")
DEVICE = re.compile(r"(cpu|gpu|cuda|cuda:\d+|mps|auto)")
GRIDS = ("all", "final", "paper", "log", "list")


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
OptInt1 = rule(lambda v: v is None or (is_int(v) and v >= 1), "an integer >= 1 or null")
OptName = rule(lambda v: v is None or isinstance(v, (str, int)) and not isinstance(v, bool), "a name or null")
Text = rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
OptText = rule(lambda v: v is None or isinstance(v, str) and v != "", "a non-empty string or null")
Device = rule(lambda v: isinstance(v, str) and DEVICE.fullmatch(v), "cpu, cuda, cuda:<N>, gpu, mps or auto")
Dtype = rule(lambda v: v in DTYPES, "float32, float16 or bfloat16")
BatchSize = rule(lambda v: v == "auto" or (is_int(v) and v >= 1), 'an integer >= 1 or "auto"')
Names = rule(lambda v: isinstance(v, list) and all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in v),
             "a list of revision names, e.g. [step1000,step2000]")
OptNames = rule(lambda v: v is None or isinstance(v, list) and all(isinstance(n, (str, int)) for n in v),
                "a list of revision names or null")
Mapping = rule(lambda v: v is None or isinstance(v, dict), "a mapping, e.g. {kind: every, every: 1000, last: 9000}, "
                                                            "or null")
Grid = rule(lambda v: v in GRIDS, "one of " + ", ".join(GRIDS))
# Two or more: log spacing always keeps the first and the last revision (one revision: revisions=final).
LogN = rule(lambda v: is_int(v) and v >= 2, "an integer >= 2 (the first and the last revision are always kept; "
                                            "one revision: revisions=final)")
Scheme = rule(lambda v: v in ("step", "step-tokens", "folder"), "one of step, step-tokens, folder")


def _by_stage(v, low: int) -> bool:
    """{stage: count}: stages from 1, counts integers >= low."""
    return isinstance(v, dict) and bool(v) and all(
        (is_int(k) or str(k).isdigit()) and int(k) >= 1 and is_int(x) and x >= low for k, x in v.items())


TokensPerStep = rule(lambda v: v is None or (is_int(v) and v >= 1) or _by_stage(v, 1),
                     "an integer >= 1, a mapping {stage: tokens per step} (e.g. {1: 4194304, 2: 2097152}) or null")
StageTokens = rule(lambda v: v is None or _by_stage(v, 0), "a mapping {stage: tokens trained in it} or null")
MainKind = rule(lambda v: v is None or v in MAIN_KINDS, f"one of {', '.join(MAIN_KINDS)} or null")
StageSteps = rule(lambda v: v in STAGE_STEPS, f"one of {', '.join(STAGE_STEPS)}")
RunNames = rule(lambda v: v is None or isinstance(v, dict) and all(str(k).startswith("seed") and isinstance(x, str)
                                                                   for k, x in v.items()),
                "a mapping {seed<s>: run name}, e.g. {seed21: alias}, or null")


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


class Batch(BaseModel):
    """model.batch: the model's recommended probe batch (conf/data interpolates it)."""
    model_config = ConfigDict(extra="forbid")
    seq_len: Int1
    vocab_lo: Int0
    vocab_hi: Int1
    bos: Bool


class Model(BaseModel):
    """conf/model/*.yaml. `arch` is checked against the supported architectures in validate()."""
    model_config = ConfigDict(extra="forbid")
    name: Text
    repo: Text
    offline: Bool = False
    arch: Text = "auto"
    layers: OptInt1 = None
    heads: OptInt1 = None
    kv_heads: OptInt1 = None  # fewer key/value heads than query heads (GQA); null: as many
    d_head: OptInt1 = None
    revision_scheme: Scheme = "step"
    tokens_per_step: TokensPerStep = None
    tokens_per_checkpoint: OptInt1 = None  # ckpt_<i> names: an index, the tokens per saved checkpoint
    stage_steps: StageSteps = "restart"  # later stages restart the step count (OLMo-2/3) or continue it (SmolLM3)
    stage_tokens: StageTokens = None  # the tokens of each stage, where the revisions cannot tell its end
    schedule: Mapping = None
    main: MainKind = None  # the hub's main: end (of pretraining), annealed (off the trajectory), no-weights
    main_step: OptInt0 = None
    dtype: Dtype
    bos_id: OptInt0 = None
    vocab_size: OptInt1 = None
    batch: Batch
    paper_revisions: OptNames = None
    tokenizer: OptText = None  # a tokenizer for the sink probe's text, where the checkpoint ships none
    family: OptText = None  # models that differ only in seed share a family: the report groups them
    seed: int | str | None = None  # this model's training seed within its family
    run_names: RunNames = None  # a suite that names each seed's run (CRFM: seed 21 is alias-gpt2-small-x21)


class Revisions(BaseModel):
    """conf/revisions/*.yaml plus the job's part of the grid (conf/config.yaml)."""
    model_config = ConfigDict(extra="forbid")
    select: Grid = "all"
    n: LogN = 10
    names: Names = []
    min_step: OptInt0 = None
    max_step: OptInt0 = None
    shard: OptName = None
    only: OptName = None


Seconds = rule(lambda v: is_number(v) and v >= 0, "a number of seconds >= 0")
OptSeconds = rule(lambda v: v is None or (is_number(v) and v > 0), "a number of seconds > 0 or null")


class Watch(BaseModel):
    """conf/config.yaml `watch:`, read by `python -m harness watch`."""
    model_config = ConfigDict(extra="forbid")
    interval_s: rule(lambda v: is_number(v) and v > 0, "a number of seconds > 0") = 5
    settle_s: Seconds = 10
    idle_s: OptSeconds = None
    until: OptInt0 = None  # a step


# ---------------------------------------------------------------- plug-in options: defaults, annotations, rules

Count = Annotated[int, Ge(1)]  # a number of things to draw, build or compare: 0 builds nothing, or divides by 0
Share = Annotated[float, Interval(ge=0, le=1)]  # a fraction of attention, heads or a rise
NonNegative = Annotated[float, Ge(0)]
Positive = Annotated[float, Gt(0)]  # a selectivity threshold (a ratio of attention means), a floor, a factor


def _fraction_text(v) -> bool:
    """a fraction in (0, 1], e.g. 1/3"""
    try:
        return not isinstance(v, bool) and 0 < Fraction(str(v)) <= 1
    except (ValueError, ZeroDivisionError):
        return False


# What the shipped plug-ins' signatures would say with annotations: looked up along the class's MRO (a subclass
# inherits its base's rules); an annotation with a range or choices in the signature itself wins.
PLUGIN_RULES: dict[str, dict[str, Any]] = {
    "harness.capture.batches.induction_batch": {"n_baseline": Count},
    "probes.selectivity.Selectivity": {"assign": Positive, "induction": Positive, "prev_token": Positive,
                                       "bos": Positive, "sink_regime": Share, "eps": Positive},
    "probes.participation_ratio.ParticipationRatio": {"n": Optional[Count]},  # null = all; 0 would be too
    "probes.null_calibration.NullCalibration": {"draws": Count, "percentile": Annotated[float, Interval(ge=0, le=100)],
                                                "floor": NonNegative, "precision": Positive, "eps": Positive},
    "probes.head_scores.HeadScore": {"lengths": list[Count], "n": Count, "threshold": Share},
    "probes.sink_rate.SinkRate": {"epsilon": Share, "text_len": Annotated[int, Ge(2)], "text_n": Count},
    "probes.ablation.Ablation": {"induction": Positive, "n_random": Count, "eps": Positive},
    "harness.analysis.rules.Rules": {"induction_counts": list[Count], "bos_fractions": list[Share],
                                     "sharp_share": Share, "pr_factor": Positive,
                                     "recall": list[Annotated[Any, Predicate(_fraction_text)]]},
    "harness.tracking.tracker.Tracker": {"mode": Literal["auto", "online", "offline", "disabled"]},
}
# Options that set how many tokens a probe feeds the model, named when that is longer than the model's context.
TOKEN_OPTIONS: dict[str, str] = {"probes.head_scores.HeadScore": "lengths", "probes.sink_rate.SinkRate": "text_len"}


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def _lookup(table: dict, target):
    """The entries of `table` for `target` and its bases (the most derived last, so it wins)."""
    found = {}
    for cls in reversed(getattr(target, "__mro__", (target,))):
        entry = table.get(_qualname(cls))
        if isinstance(entry, dict):
            found.update(entry)
        elif entry is not None:
            found = entry
    return found


@dataclass(frozen=True)
class Spec:
    """What an option takes: one of `kinds` ("bool", "int", "number", "list", "choice"; none = anything), within
    `bounds` (annotated-types Ge/Gt/Le/Lt/Predicate), a list's items as `item`, or null where `nullable`."""
    kinds: tuple = ()
    bounds: tuple = ()
    item: Spec | None = None
    choices: tuple = ()
    nullable: bool = False
    default: Any = None


_SCALARS = {bool: "bool", int: "int", float: "number"}


def _peel(annotation):
    """(type, constraint metadata, nullable): Annotated and Optional taken off."""
    meta, nullable = [], False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            meta += list(annotation.__metadata__)
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = typing.get_args(annotation)
            rest = [a for a in args if a is not type(None)]
            nullable = nullable or len(rest) < len(args)
            if len(rest) != 1:
                return rest, meta, nullable
            annotation = rest[0]
        else:
            return annotation, meta, nullable


def _bounds(meta) -> tuple:
    out = []
    for m in meta:
        if isinstance(m, Interval):
            out += list(m)
        elif isinstance(m, (Ge, Gt, Le, Lt, Predicate)):
            out.append(m)
    return tuple(out)


def constrains(annotation) -> bool:
    """Whether an annotation says more than a type: a range or choices."""
    ann, meta, _ = _peel(annotation)
    if _bounds(meta) or typing.get_origin(ann) is Literal:
        return True
    return typing.get_origin(ann) in (list, tuple) and any(constrains(a) for a in typing.get_args(ann))


def spec_of(annotation, default=inspect.Parameter.empty) -> Spec:
    """An option's Spec from its annotation, where that says something, else from its default."""
    empty = inspect.Parameter.empty
    ann, meta, nullable = _peel(annotation) if annotation is not empty else (empty, [], False)
    bounds = _bounds(meta)
    dflt = None if default is empty else default
    nullable = nullable or (default is None)
    if typing.get_origin(ann) is Literal:
        return Spec(("choice",), choices=typing.get_args(ann), nullable=nullable)
    if isinstance(ann, list):  # a union of several types: the scalar ones (bool | int | float)
        kinds = tuple(_SCALARS[a] for a in ann if a in _SCALARS)
        return Spec(kinds, bounds, nullable=nullable or not kinds, default=dflt)
    if ann in _SCALARS:
        kind = _SCALARS[ann]
        if kind == "int" and not bounds:
            bounds = (Ge(0),)
        return Spec((kind,), bounds, nullable=nullable, default=dflt)
    if typing.get_origin(ann) in (list, tuple) and typing.get_args(ann):
        return Spec(("list",), item=spec_of(typing.get_args(ann)[0]), nullable=nullable, default=dflt)
    if ann is Any and bounds:
        return Spec((), bounds, nullable=nullable, default=dflt)
    # The annotation says nothing checkable (none, str, a class): the default's type.
    if dflt is None:
        return Spec(nullable=True)
    if isinstance(dflt, bool):
        return Spec(("bool",), default=dflt)
    if is_int(dflt):
        return Spec(("int",), bounds or (Ge(0),), default=dflt)
    if isinstance(dflt, float):
        return Spec(("number",), bounds, default=dflt)
    if isinstance(dflt, (list, tuple)) and dflt and all(is_number(d) for d in dflt):
        return Spec(("list",), item=spec_of(type(dflt[0])), default=dflt)
    return Spec(default=dflt)


def _bound_text(bounds) -> str:
    lo = next((b for b in bounds if isinstance(b, (Ge, Gt))), None)
    hi = next((b for b in bounds if isinstance(b, (Le, Lt))), None)
    pred = [b for b in bounds if isinstance(b, Predicate)]
    if pred:
        return (pred[0].func.__doc__ or pred[0].func.__name__).strip()
    if isinstance(lo, Ge) and isinstance(hi, Le):
        return f"between {lo.ge} and {hi.le}"
    ops = {Ge: ">=", Gt: ">", Le: "<=", Lt: "<"}
    value = lambda b: getattr(b, type(b).__name__.lower())  # Ge(ge=1).ge
    return " and ".join(f"{ops[type(b)]} {value(b)}" for b in (lo, hi) if b is not None)


def describe(spec: Spec, plural: bool = False) -> str:
    """What a value of `spec` must be, in words (`an integer >= 1`, `a number between 0 and 1`, ...)."""
    rng = _bound_text(spec.bounds)
    words = {"bool": "true/false values" if plural else "true or false",
             "int": "integers" if plural else "an integer", "number": "numbers" if plural else "a number",
             "choice": "one of " + ", ".join(map(str, spec.choices))}
    parts = []
    for k in spec.kinds:
        if k == "list":
            parts.append("a list of " + describe(spec.item or Spec(), plural=True))
        else:
            parts.append(words[k] + (f" {rng}" if rng and k in ("int", "number") else ""))
    if not parts:
        parts = [rng] if rng else ["values" if plural else "a value"]
    text = " or ".join(parts) + (" or null" if spec.nullable and spec.kinds else "")
    d = spec.default
    if is_number(d) or isinstance(d, (list, tuple)) and d and all(is_number(x) for x in d):
        text += f" (default {list(d) if isinstance(d, tuple) else d})"
    return text


def _within(value, bounds) -> bool:
    for b in bounds:
        if isinstance(b, Predicate):
            if not b.func(value):
                return False
        elif not is_number(value) or not (
                value >= b.ge if isinstance(b, Ge) else value > b.gt if isinstance(b, Gt)
                else value <= b.le if isinstance(b, Le) else value < b.lt):
            return False
    return True


def check_value(key: str, value, spec: Spec) -> None:
    if value is None:
        if not (spec.nullable or not spec.kinds):
            _fail(key, value, f"must be {describe(spec)}")
        return
    kind_ok = {"bool": lambda v: isinstance(v, bool), "int": is_int, "number": is_number,
               "choice": lambda v: v in spec.choices, "list": lambda v: isinstance(v, (list, tuple)) and len(v) > 0}
    matched = [k for k in spec.kinds if kind_ok[k](value)]
    if spec.kinds and not matched:
        _fail(key, value, f"must be {describe(spec)}")
    if "list" in matched:
        for i, v in enumerate(value):
            check_value(f"{key}[{i}]", v, spec.item or Spec())
    elif not (set(matched) & {"bool", "choice"}) and not _within(value, spec.bounds):
        _fail(key, value, f"must be {describe(spec)}")


def like_default(key: str, value, default, annotation=inspect.Parameter.empty) -> None:
    """A value of the type its default has, within the range its annotation gives (see spec_of)."""
    check_value(key, value, spec_of(annotation, default))


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
            fields = _fields_at(schema, err["loc"][:-1])
            msg = f"unknown option{_closest(str(err['loc'][-1]), fields)} (valid: {', '.join(fields)})"
        elif err["type"] == "missing":
            msg = "missing (set it on the command line, e.g. " + key + "=...)"
        elif err["type"] in ("model_type", "dict_type"):
            msg = "must be a mapping of " + ", ".join(_fields_at(schema, err["loc"]))
        _fail(key, err.get("input"), msg)


def _fields_at(schema: type[BaseModel], loc) -> list[str]:
    """The fields of the (nested) schema at `loc`, e.g. Model's `batch` -> Batch's."""
    for part in loc:
        field = schema.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        schema = field.annotation
    return list(schema.model_fields)


def _closest(word: str, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {near[0]}?" if near else ""


def signature_params(target) -> dict:
    try:
        return dict(inspect.signature(target, eval_str=True).parameters)
    except NameError:  # an annotation that names a type imported only for type checkers: check by defaults only
        return dict(inspect.signature(target).parameters)


def check_signature(section: str, target, values: dict, skip=("name",)) -> None:
    """Options of a plug-in (probe, batch builder, analysis rules) against its constructor's parameters."""
    params = signature_params(target)
    rules = _lookup(PLUGIN_RULES, target)
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
        annotation = params[key].annotation
        if key in rules and not constrains(annotation):
            annotation = rules[key]
        like_default(f"{section}.{key}", value, params[key].default, annotation)


# ---------------------------------------------------------------- ranges

# (the low end's name, the high end's name from it, whether the range includes its high end)
_RANGES = ((re.compile(r"^(.*)lo$"), r"\1hi", False), (re.compile(r"^(.*)low$"), r"\1high", False),
           (re.compile(r"^min(_.+)$"), r"max\1", True), (re.compile(r"^(.+_)min$"), r"\1max", True))


def check_ranges(section: str, values) -> None:
    """Two options that are the ends of a range, in any section (nested ones too): the low end first.
    `<x>lo`/`<x>hi` are half-open ([lo, hi): lo < hi), `min_<x>`/`max_<x>` inclusive (min <= max)."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        if isinstance(value, dict):
            check_ranges(f"{section}.{key}", value)
            continue
        for pattern, high, inclusive in _RANGES:
            m = pattern.match(str(key))
            other = m.expand(high) if m else None
            if other is None or other not in values or not (is_number(value) and is_number(values[other])):
                continue
            if value > values[other] or (value == values[other] and not inclusive):
                op = "<=" if inclusive else "<"
                _fail(f"{section}.{key}", value, f"must be {op} {section}.{other}={values[other]} (an empty range)")


# ---------------------------------------------------------------- the config

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
    check_ranges("analysis", rules)
    check_thresholds(cfg)


def _threshold_names(cfg: DictConfig) -> list[str]:
    """The thresholds there are: those conf/config.yaml declares and those a plug-in's options interpolate."""
    from harness.common.paths import CONF_DIR

    try:
        declared = OmegaConf.load(Path(CONF_DIR) / "config.yaml").get("thresholds") or {}
    except OSError:
        declared = {}
    used = re.findall(r"\$\{thresholds\.(\w+)\}", str(OmegaConf.to_container(cfg, resolve=False)))
    return list(dict.fromkeys([*declared, *used]))


def check_thresholds(cfg: DictConfig) -> None:
    """`thresholds.*`: a known name (a typo would change nothing), selectivities (x) above 0; the sink regime a
    fraction of heads."""
    names = _threshold_names(cfg)
    for key, value in (resolved(cfg, "thresholds") or {}).items():
        if names and key not in names:
            _fail(f"thresholds.{key}", value, f"no probe reads this threshold{_closest(key, names)} "
                  f"(valid: {', '.join(names)})")
        if not (is_number(value) and value > 0):
            _fail(f"thresholds.{key}", value, "must be a number > 0")
        if key == "sink_regime" and not value <= 1:
            _fail(f"thresholds.{key}", value, "must be a fraction of heads, between 0 and 1")


def check_model(model: dict) -> None:
    from harness.capture.arch import ARCHS

    _check_model("model", Model, model)
    runs = model.get("run_names")
    if runs and f"seed{model.get('seed')}" not in runs:
        _fail("model.seed", model.get("seed"), "must be one of " + ", ".join(str(k).removeprefix("seed") for k in runs)
              + f" (the runs of {model.get('family') or model.get('name')})")
    if model.get("arch", "auto") not in ("auto", *ARCHS):
        _fail("model.arch", model["arch"], f"must be one of auto, {', '.join(ARCHS)}")
    check_ranges("model", model)


def check_revisions(grid: dict) -> None:
    from harness.sources.revisions import parse_shard

    _check_model("revisions", Revisions, grid)
    if grid.get("select") == "list" and not grid.get("names"):
        _fail("revisions.names", grid.get("names"), "revisions=list needs names, e.g. 'revisions.names=[step1,step8]'")
    if grid.get("shard") is not None:
        parse_shard(grid["shard"])  # one line: "revisions.shard=...: not a shard: expected <i>/<n> ..."
    check_ranges("revisions", grid)


def validate(cfg: DictConfig) -> None:
    """Everything `python -m harness` reads, before it lists a revision or loads a checkpoint."""
    check_names(cfg)
    check_model(resolved(cfg, "model"))  # e.g. model=local without model.repo
    check_thresholds(cfg)  # before the probes that interpolate them
    check_revisions(resolved(cfg, "revisions") or {})
    _check_model("runner", Runner, resolved(cfg, "runner"))
    data = resolved(cfg, "data")
    _check_model("data", Data, data)
    check_signature("data", _target("data", data), data)
    check_ranges("data", data)
    for name, probe in (resolved(cfg, "probe") or {}).items():
        if probe is not None:
            check_signature(f"probe.{name}", _target(f"probe.{name}", probe), probe)
            check_ranges(f"probe.{name}", probe)
    logger = resolved(cfg, "logger") or {}
    if logger.get("_target_"):
        check_signature("logger", _target("logger", logger), logger, skip=("config",))  # config: the job's
    check_analysis(cfg)


def check_watch(cfg: DictConfig) -> None:
    """The options of `harness watch` besides a job's (which LiveProber checks)."""
    _check_model("watch", Watch, resolved(cfg, "watch") or {})


def validate_store_args(cfg: DictConfig) -> None:
    """What `harness analyze` and `harness report` read: the experiment, its model folders, the rules."""
    check_names(cfg, ("experiment_name",))
    models = resolved(cfg, "models") or []
    for i, name in enumerate([models] if isinstance(models, str) else models):
        if not _safe_name(name):
            _fail(f"models[{i}]", name, f"must be {SAFE_NAME}")
    check_analysis(cfg)


def known_options(section: str, cfg: DictConfig) -> list[str]:
    """The options a section takes (for messages about keys that are not in the composed config)."""
    fixed = {"runner": Runner, "model": Model, "revisions": Revisions, "model.batch": Batch, "watch": Watch}
    if section in fixed:
        return list(fixed[section].model_fields)
    if section == "analysis":
        from harness.analysis.rules import Rules

        return list(signature_params(Rules))
    try:
        node = OmegaConf.select(cfg, section)
        path = node.get("_target_") if OmegaConf.is_dict(node) else None
        target = _target(section, {"_target_": path}) if isinstance(path, str) else None
    except (ConfigError, OmegaConfBaseException):
        return []
    if target is None:
        return []
    params = signature_params(target)
    return [k for k, p in params.items() if k not in ("name", "config") and p.kind not in (p.VAR_KEYWORD,
                                                                                          p.VAR_POSITIONAL)]


# ---------------------------------------------------------------- what the model can take

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def checkpoint_config(model_cfg: dict, revision: str) -> dict | None:
    """A revision's config.json, without its weights: from a local checkpoint folder (`<repo>/<revision>/`), the
    hub cache, or (a hub model, online) downloaded on its own. None where it cannot be had."""
    from harness.sources.hubcache import resolve as cached_snapshot
    from harness.sources.revisions import is_local, local_only

    repo = str(model_cfg.get("repo"))
    if is_local(repo):
        path = Path(repo).expanduser() / revision / "config.json"
    else:
        snap = cached_snapshot(repo, revision)
        path = snap / "config.json" if snap is not None else None
        if (path is None or not path.is_file()) and not local_only(model_cfg):
            from huggingface_hub import hf_hub_download

            try:
                path = Path(hf_hub_download(repo, "config.json", revision=revision))
            except Exception:  # noqa: BLE001 - no network, no such file: the load checks it later
                return None
    try:
        return json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def context_length(hf_config: dict) -> tuple[int | None, str | None]:
    for key in CONTEXT_KEYS:
        if is_int(hf_config.get(key)) and hf_config[key] > 0:
            return hf_config[key], key
    return None, None


def check_context(model_cfg: dict, revision: str, probes: list, batch, probe_cfg: dict | None = None) -> None:
    """What the model can take, from the revision's config.json before any weights are loaded: its architecture,
    the probe batch's token ids against its vocabulary, and every batch's length against its context."""
    from harness.capture.arch import arch_of, head_layout
    from harness.capture.batches import check_vocab
    from probes.base import Context

    hf = checkpoint_config(model_cfg, revision)
    if not hf:
        return
    name = model_cfg.get("name")
    if hf.get("model_type") is not None:
        arch_of(hf["model_type"])  # one line naming the supported architectures, or why this one is refused
    text = {**hf, **hf["text_config"]} if isinstance(hf.get("text_config"), dict) else hf  # a multimodal wrapper
    if is_int(text.get("vocab_size")) and "vocab_lo" in batch.meta:
        check_vocab(batch.meta["vocab_lo"], batch.meta["vocab_hi"], text["vocab_size"], name)
    limit, key = context_length(text)
    if limit is None:
        return
    where = f"longer than {name}'s context ({key}={limit})"
    seq = batch.meta.get("seq_len", batch.seq_len)
    if batch.seq_len > limit:
        bos = batch.seq_len - seq
        _fail("data.seq_len", seq, f"{where}; use data.seq_len <= {limit - bos}"
              + (" (the BOS is prepended)" if bos else ""))
    try:
        layout = head_layout(types.SimpleNamespace(**hf))
    except (AttributeError, TypeError, ZeroDivisionError):
        layout = None
    ctx = Context(layout, batch, model_cfg, revision)
    for p in probes:
        option = _lookup(TOKEN_OPTIONS, type(p)) or None
        value = (probe_cfg or {}).get(p.name, {}).get(option) if option else None
        if is_int(value) and value > limit:
            _fail(f"probe.{p.name}.{option}", value, where)
        try:
            own = p.make_batch(ctx)
        except Exception:  # noqa: BLE001 - a batch that needs the loaded model is checked when it is built
            continue
        if own is not None and own.seq_len > limit:
            shown = f"probe.{p.name}.{option}={value}" if option and value is not None else f"probe.{p.name}"
            raise ConfigError(f"{shown}: its batch is {own.seq_len} tokens, {where}")
