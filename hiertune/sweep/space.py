"""Search-space YAML → typed settings and Optuna distributions.

    family: dualhead
    fixed:       {backbone: resnet18, epochs: 15, batch_size: 64, data: null, ...}
    search:      {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}, ...}
    tune:        {num_samples: 24, sampler: tpe, seed: 0}
    scheduler:   {type: asha, max_t: 15, grace_period: 2, reduction_factor: 3}
    resources:   {cpus_per_trial: 1, gpus_per_trial: 0.25}
    mlflow:      {tracking_uri: null}
    storage:     null
    pick:        knee   # the recommended front point: knee, max-seen, max-unseen or weight=W
    budget:      30m    # the trials' wall clock (hiertune.sweep.budget); null: no limit

`search` entries use Optuna's own shape ({type, low, high, log, step, choices}), may carry a
`default` (what `hiertune train` uses; otherwise the midpoint), a `when: {param: [values]}`
condition, and `posthoc: true|false`. `scheduler.type` is asha (the default: ASHA on each
trial's front hypervolume), moasha (MO-ASHA on the fronts themselves, hiertune.sweep.moasha) or fifo
(no early stopping: every trial runs max_t epochs). Thresholds and the novelty score are post-hoc by default
(BRIEF): declared here like any parameter, they are evaluated on every trial's logits after
the forward pass instead of being sampled, unless `posthoc: false` asks Optuna to sample them.
What they declare is the grid (`SearchSpace.posthoc_grid`): τ within the declared range (τ is the
share of seen validation images called novel, hiertune.novelty.posthoc), only the declared scores.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hiertune.training.config import TrialConfig, coerce
from hiertune.errors import UserError, did_you_mean, first_line
from hiertune.models.backbone import check_backbone, check_weights_file
from hiertune.models.registry import family
from hiertune.novelty.posthoc import PosthocConfig, tau_grid
from hiertune.novelty.registry import list_scores
from hiertune.secrets import remember_uri
from hiertune.sweep.budget import parse_duration
from hiertune.sweep.schedulers import SCHEDULERS, SchedulerSettings

POSTHOC_PARAMS = ("tau_super", "tau_sub", "novelty_score")
TAUS = ("tau_super", "tau_sub")
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    default: Any = None
    when: dict[str, tuple] | None = None
    posthoc: bool = False

    def midpoint(self):
        """What a single debugging run uses: the default, else the (log-)middle, else the first choice."""
        if self.default is not None:
            return self.default
        if self.type == "categorical":
            return self.choices[0]
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.step:
            mid = self.low + round((mid - self.low) / self.step) * self.step
        return int(round(mid)) if self.type == "int" else float(mid)

    def active(self, values: dict) -> bool:
        return not self.when or all(values.get(k) in allowed for k, allowed in self.when.items())


@dataclass(frozen=True)
class TuneSettings:
    num_samples: int = 8
    sampler: str = "tpe"
    seed: int = 0
    max_concurrent: int = 0  # 0: as many as resources allow
    max_failures: int = 1  # retries of a failed trial, from its last checkpoint


@dataclass(frozen=True)
class ResourceSettings:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass(frozen=True)
class MlflowSettings:
    # No experiment name: each sweep is its own MLflow experiment, named by --name (see parse_space).
    tracking_uri: str | None = None


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    family: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    tune: TuneSettings = field(default_factory=TuneSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    storage: str | None = None
    pick: str = "knee"  # the recommended front point (hiertune.sweep.front.Pick); export-best's default
    budget: float | None = None  # seconds of the trials' wall clock (hiertune.sweep.budget)

    @property
    def sampled(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.posthoc)

    @property
    def posthoc(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.posthoc)

    @property
    def samples_thresholds(self) -> bool:
        """True when the space asks Optuna to sample the thresholds (`posthoc: false`): each trial
        is then judged, and enters the front, at its one sampled point instead of its grid."""
        return any(p.name in TAUS for p in self.sampled)

    def posthoc_grid(self) -> PosthocConfig:
        """The (score, τ_super, τ_sub) grid every trial evaluates, as the space declares it: a
        declared τ over its range (spaced as declared: hiertune.novelty.posthoc.tau_grid) or its
        choices, a declared score's choices; a fixed one as itself; one the space leaves out at
        the default (every registered score, τ over [0, 1])."""
        declared = {p.name: p for p in self.params if p.name in POSTHOC_PARAMS}

        def values(name: str, default: tuple) -> tuple:
            p = declared.get(name)
            if p is not None:
                return p.choices if p.type == "categorical" else tau_grid(p.low, p.high, p.log, p.step)
            return (self.fixed[name],) if name in self.fixed else default

        return PosthocConfig(scores=values("novelty_score", list_scores()), tau_super=values("tau_super", tau_grid()),
                             tau_sub=values("tau_sub", tau_grid()))

    def trial_config(self, values: dict | None = None) -> TrialConfig:
        """Fixed settings + midpoints of active searched parameters + `values`, validated."""
        merged = {"family": self.family, **self.fixed}
        for p in self.params:
            if p.active({**merged, **(values or {})}):
                merged[p.name] = p.midpoint()
        merged.update(values or {})
        return TrialConfig.from_dict(merged, where=str(self.path))

    def with_overrides(self, overrides: dict[str, Any]) -> "SearchSpace":
        """`--set key=value`: a section key (`tune.num_samples`) or a trial parameter, which
        becomes fixed (and leaves the search if it was searched)."""
        raw = {"family": self.family, "fixed": dict(self.fixed), "storage": self.storage, "pick": self.pick,
               "budget": f"{self.budget:g}s" if self.budget else None,
               "search": {p.name: _param_to_raw(p) for p in self.params},
               **{s: _section_to_raw(getattr(self, s)) for s in SECTIONS}}
        for key, value in overrides.items():
            section, _, sub = key.partition(".")
            if sub and section in SECTIONS:
                raw[section][sub] = value
            elif key in ("family", "storage", "pick", "budget"):
                raw[key] = value
            else:
                raw["fixed"][key] = value
                raw["search"].pop(key, None)
        return parse_space(raw, self.path)


SECTIONS = {"tune": TuneSettings, "scheduler": SchedulerSettings, "resources": ResourceSettings,
            "mlflow": MlflowSettings}
TOP_KEYS = ("family", "fixed", "search", "storage", "pick", "budget", *SECTIONS)
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "default", "when", "posthoc")


MAX_DEPTH = 32  # a search space nests 4 levels; thousands would exhaust Python's recursion


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases, deep nesting or repeated keys. A few hundred bytes of nested
    aliases ("billion laughs") build a small shared structure that explodes when walked, printed
    or copied; a search space never needs them, so the first one is refused before anything
    expands. Thousands of nested brackets would end in a RecursionError; a key written twice
    would silently keep the last value."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not supported; "
                                              "write the value out", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice (first at line {first[key] + 1})", key_node.start_mark)
            if isinstance(key, typing.Hashable):
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# PyYAML reads YAML 1.1, where a float needs a dot and a signed exponent: `3e-3` and `1.5e3`
# would stay strings and a float setting refuse them. YAML 1.2 (and anyone typing `--set lr=3e-3`)
# reads numbers; these spellings become floats here, for --set and space files alike.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def _load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML scalars (1e-3, true, null, [a, b])."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = _load_yaml(value) if value.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: value is not a valid YAML scalar") from None
    return out


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: search space not found")
    try:
        raw = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise UserError(f"{path}: malformed YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    _remember_uris(raw)
    return parse_space(raw, path)


def _remember_uris(raw: Any) -> None:
    """A password in any URI the file holds (data, storage, tracking_uri) is masked from here on."""
    if isinstance(raw, dict):
        raw = list(raw.values())
    for value in raw if isinstance(raw, list) else [raw]:
        if isinstance(value, (dict, list)):
            _remember_uris(value)
        else:
            remember_uri(value)


def parse_space(raw: Any, path: Path) -> SearchSpace:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    _known_keys(raw, TOP_KEYS, str(path))
    if "family" not in raw:
        raise UserError(f"{path}: missing key 'family'")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise UserError(f"{path}: fixed must be a mapping")
    search = raw.get("search") or {}
    if not isinstance(search, dict):
        raise UserError(f"{path}: search must be a mapping")
    trial_fields = TrialConfig.field_names()
    _known_keys(fixed, trial_fields, f"{path}: fixed")
    _known_keys(search, trial_fields, f"{path}: search")
    params = tuple(_param(name, spec, f"{path}: search.{name}") for name, spec in search.items())
    _check_conditions(params, {"family": raw["family"], **fixed}, trial_fields, path)
    if isinstance(raw.get("mlflow"), dict) and "experiment" in raw["mlflow"]:
        raise UserError(f"{path}: mlflow.experiment is not supported: each sweep is its own MLflow experiment, "
                        "named by --name; remove the key")
    sections = {name: _section(cls, raw.get(name), f"{path}: {name}") for name, cls in SECTIONS.items()}
    tune = sections["tune"]
    if tune.sampler not in SAMPLERS:
        raise UserError(f"{path}: tune.sampler: unknown sampler {tune.sampler!r}"
                        f"{did_you_mean(tune.sampler, SAMPLERS, list_known=True)}")
    for name, minimum in (("num_samples", 1), ("max_concurrent", 0), ("max_failures", 0)):
        if getattr(tune, name) < minimum:
            raise UserError(f"{path}: tune.{name} must be >= {minimum}, got {getattr(tune, name)}")
    sched = sections["scheduler"]
    if sched.type not in SCHEDULERS:
        raise UserError(f"{path}: scheduler.type: unknown scheduler {sched.type!r}"
                        f"{did_you_mean(sched.type, SCHEDULERS, list_known=True)}")
    if not 1 <= sched.grace_period <= sched.max_t or sched.reduction_factor < 2:
        raise UserError(f"{path}: scheduler needs 1 <= grace_period <= max_t and reduction_factor >= 2 "
                        f"(got grace_period {sched.grace_period}, max_t {sched.max_t}, "
                        f"reduction_factor {sched.reduction_factor})")
    for name in {n for spec in SCHEDULERS.values() for n in spec.own_settings} - set(sched.spec.own_settings):
        if getattr(sched, name) != getattr(SchedulerSettings, name):
            owner = next(spec.label for spec in SCHEDULERS.values() if name in spec.own_settings)
            raise UserError(f"{path}: scheduler.{name} is {owner}'s; scheduler.type is {sched.type!r}")
    if not 0 <= sched.epsilon < 1:
        raise UserError(f"{path}: scheduler.epsilon must be in [0, 1), got {sched.epsilon}")
    res = sections["resources"]
    if res.cpus_per_trial <= 0 or res.gpus_per_trial < 0:
        raise UserError(f"{path}: resources need cpus_per_trial > 0 and gpus_per_trial >= 0")
    storage = coerce(str | None, raw.get("storage"), f"{path}: storage")
    pick = coerce(str, raw.get("pick") or "knee", f"{path}: pick")
    budget = parse_duration(raw.get("budget"), f"{path}: budget")
    space = SearchSpace(path, coerce(str, raw["family"], f"{path}: family"), fixed, params, storage=storage,
                        pick=pick, budget=budget, **sections)
    _check_thresholds(space)  # before the midpoint trial, which would name a τ the space never wrote
    _check_trial(space)
    return space


def _check_thresholds(space: SearchSpace) -> None:
    """A τ outside [0, 1] is no share of images: refused in one line, as the range was written."""
    for p in space.params:
        if p.name in TAUS:
            values = p.choices if p.type == "categorical" else (p.low, p.high)
            if not all(0 <= v <= 1 for v in values):
                written = list(values) if p.type == "categorical" else f"[{p.low}, {p.high}]"
                raise UserError(f"{space.path}: search.{p.name}: τ is the share of seen validation images called "
                                f"novel, in [0, 1]; got {written}")


def _check_conditions(params: tuple[Param, ...], fixed: dict, trial_fields, path: Path) -> None:
    """A `when` that can never hold leaves its parameter unsampled in every trial, silently:
    each condition must name a fixed setting or a sampled parameter declared before it (the
    sampler goes in order), with values that parameter can take."""
    for i, p in enumerate(params):
        where = f"{path}: search.{p.name}.when"
        for cond, allowed in (p.when or {}).items():
            if cond not in trial_fields:
                raise UserError(f"{where}: unknown parameter {cond!r}")
            earlier = {q.name: q for q in params[:i] if not q.posthoc}
            if cond in earlier:
                q = earlier[cond]
                bad = [v for v in allowed if not _can_take(q, v)]
                if bad:
                    can = list(q.choices) if q.type == "categorical" else f"[{q.low}, {q.high}]"
                    raise UserError(f"{where}: {cond} can never be {bad[0]!r} (it takes {can})")
            elif cond in fixed:  # `--set finetune=full` switches a conditional parameter off on purpose
                continue
            elif any(q.name == cond for q in params):
                raise UserError(f"{where}: {cond!r} is not sampled before {p.name} (declare it earlier, and "
                                "not post-hoc)")
            else:
                raise UserError(f"{where}: {cond!r} is neither searched nor fixed in this space")


def _can_take(p: Param, value) -> bool:
    if p.type == "categorical":
        return value in p.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high


def _check_trial(space: SearchSpace) -> None:
    """Build the midpoint trial and one trial at every categorical choice, so an unknown family,
    backbone or choice fails now, not hours into the sweep."""
    base = space.trial_config()
    for p in space.params:
        if p.type == "categorical":
            for choice in p.choices:
                space.trial_config({p.name: choice})
    if family(base.family).uses_backbone:
        try:
            check_backbone(base.backbone)
        except UserError as exc:
            raise UserError(f"{space.path}: {exc}") from None
        if isinstance(base.pretrained, str):  # a local file: now, not in every trial after the data loads
            check_weights_file(base.backbone, Path(base.pretrained))


def _param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a mapping like {{type: float, low: 0.001, high: 0.1}}")
    _known_keys(spec, PARAM_KEYS, where)
    kind = spec.get("type")
    if kind not in ("float", "int", "categorical"):
        raise UserError(f"{where}.type must be float, int or categorical, got {kind!r}")
    posthoc = coerce(bool, spec.get("posthoc", name in POSTHOC_PARAMS), f"{where}.posthoc")
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, dict) or not all(isinstance(v, list) for v in when.values()):
            raise UserError(f"{where}.when must map parameter names to lists of values")
        when = {k: tuple(v) for k, v in when.items()}
    hint = typing.get_type_hints(TrialConfig)[name]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}.choices must be a non-empty list")
        for c in choices:
            coerce(hint, c, f"{where}.choices")
        if spec.get("default") is not None and spec["default"] not in choices:
            raise UserError(f"{where}.default {spec['default']!r} is not one of its choices {choices}")
        extra = [k for k in ("low", "high", "log", "step") if k in spec]
        if extra:
            raise UserError(f"{where}: {extra[0]!r} does not apply to a categorical parameter")
        return Param(name, kind, choices=tuple(choices), default=spec.get("default"), when=when, posthoc=posthoc)
    number = int if kind == "int" else float
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a {kind} parameter needs low and high")
    low = coerce(number, spec["low"], f"{where}.low")
    high = coerce(number, spec["high"], f"{where}.high")
    log = coerce(bool, spec.get("log", False), f"{where}.log")
    step = coerce(number | None, spec.get("step"), f"{where}.step")
    if low > high:
        raise UserError(f"{where}: low {low} > high {high}")
    if log and low <= 0:
        raise UserError(f"{where}: log scale needs low > 0, got {low}")
    if log and step is not None and (kind == "float" or step != 1):
        raise UserError(f"{where}: log and step cannot be combined")
    if step is not None and step <= 0:
        raise UserError(f"{where}.step must be > 0, got {step}")
    coerce(hint, low, f"{where}.low")
    default = spec.get("default")
    if default is not None:
        coerce(hint, default, f"{where}.default")
        if not low <= default <= high:
            raise UserError(f"{where}.default {default} is outside [{low}, {high}]")
        if step is not None and not math.isclose((default - low) / step, round((default - low) / step)):
            raise UserError(f"{where}.default {default} is not on the grid low + k·step ({low}, step {step})")
    return Param(name, kind, low=low, high=high, log=log, step=step, default=default, when=when, posthoc=posthoc)


def _section(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping")
    hints = typing.get_type_hints(cls)
    _known_keys(raw, hints, where)
    return cls(**{k: coerce(hints[k], v, f"{where}.{k}") for k, v in raw.items()})



def _known_keys(mapping: dict, known, where: str) -> None:
    for key in mapping:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")


def _param_to_raw(p: Param) -> dict:
    raw = {"type": p.type, "posthoc": p.posthoc}
    for key in ("low", "high", "step", "default"):
        if getattr(p, key) is not None:
            raw[key] = getattr(p, key)
    if p.log:
        raw["log"] = True
    if p.choices is not None:
        raw["choices"] = list(p.choices)
    if p.when:
        raw["when"] = {k: list(v) for k, v in p.when.items()}
    return raw


def _section_to_raw(settings) -> dict:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}
