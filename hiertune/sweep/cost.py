"""What a search space costs on the machine it runs on, said before the first trial, and what a
budgeted sweep leaves out because it cannot afford it.

A trial's epoch cost is decided by a few settings: the backbone, the fine-tuning strategy (a
frozen backbone's features, and their corrupted views, come from the cache) and the image size.
Each combination the space can sample is one *kind*; one epoch of each is measured on a few
batches (hiertune.training.probe) with a trial's resources, and the whole sweep is estimated
from them at the parallelism the resources allow.

With a budget, a kind is unaffordable when one of its trials cannot reach the scheduler's first
rung (ASHA's grace_period epochs; every epoch without early stopping) in a quarter of the budget:
a budget should see at least four trials through that rung on each slot, or the sampler and the
scheduler have nothing to compare. A choice whose kinds are all unaffordable is left out of the
sweep, in one line, and the cheap route is named.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from hiertune.models.registry import family
from hiertune.novelty.posthoc import PosthocConfig
from hiertune.training.config import TrialConfig
from hiertune.sweep.space import SearchSpace
from hiertune.progress import duration
from hiertune.training.probe import EpochCost
from hiertune.training.probe_cache import cached_probe

log = logging.getLogger("hiertune")

AXES = ("backbone", "finetune", "image_size")  # the categorical settings an epoch's cost follows
TRIALS_PER_SLOT = 4  # trials a budget should see through the first rung on each slot


@dataclass(frozen=True)
class Kind:
    """One combination of the cost-deciding settings, and how likely the sampler draws it."""

    values: dict  # AXES values as a trial is given them
    cfg: TrialConfig
    weight: float

    @property
    def cached(self) -> bool:
        return _frozen(self.cfg) and self.cfg.cached_views() > 0

    @property
    def identity(self) -> tuple:
        """What the cost depends on: kinds that share it are measured once."""
        backbone = family(self.cfg.family).uses_backbone
        return (self.cfg.backbone if backbone else None, self.cfg.finetune if backbone else None, self.cfg.image_size,
                self.cached)

    def label(self) -> str:
        cfg = self.cfg
        backbone = family(cfg.family).uses_backbone
        parts = [cfg.backbone] if backbone else []
        parts.append(f"{cfg.image_size}px")
        if backbone:
            parts.append(f"finetune={cfg.finetune}")
        if _frozen(cfg):
            parts.append("(cached features)" if self.cached else "(frozen backbone every step)")
        return " ".join(parts)


def _frozen(cfg: TrialConfig) -> bool:
    return cfg.model_config().backbone_frozen


def space_kinds(space: SearchSpace) -> list[Kind]:
    """Every kind the space can sample, weighted as a uniform sampler would draw it."""
    searched = {p.name: p for p in space.sampled}
    axes = []
    for name in AXES:
        p = searched.get(name)
        axes.append((name, list(p.choices) if p is not None and p.type == "categorical" else [None]))
    weight = 1.0 / math.prod(len(values) for _, values in axes)
    kinds = []
    for combo in itertools.product(*(values for _, values in axes)):
        values = {name: v for (name, _), v in zip(axes, combo) if v is not None}
        kinds.append(Kind(values, space.trial_config(values), weight))
    return kinds


def full_share(space: SearchSpace, epochs: int) -> float:
    """The share of a trial's epochs evaluated in full: the scheduler's rungs and the last."""
    last = min(epochs, space.scheduler.max_t)
    return len({r for r in space.scheduler.rungs if r <= last} | {last}) / last


def measure(kinds: list[Kind], frozen: TrialConfig | None, bundle, store, cpus: float, gpus: float,
            here: bool, share: float = 1.0, grid: PosthocConfig | None = None, data: dict | None = None,
            fresh: bool = False) -> tuple[dict[tuple, EpochCost], str | None]:
    """One epoch of each distinct kind, measured with a trial's resources: in a Ray task, or with
    `here` (a local Ray without GPUs, where a task would run on these same CPUs) in this process,
    with a trial's threads, sparing a worker's start. Cached kinds are measured only where the
    shared features are (`frozen`: their backbone and size); the others would extract features
    just to be timed. Evaluation is timed on the space's post-hoc `grid`.

    `data`: what the trials read (hiertune.sweep.resume.data_inputs), given when the probe runs
    on this machine: the figures are then kept in the cache root (hiertune.training.probe_cache),
    and a sweep of the same kinds on the same data, machine and resources reads them, unless
    `fresh` (`--remeasure`): then they are measured again and replace the kept ones. Returns the
    costs, and when they were measured if an earlier sweep did (else None)."""
    import ray
    import torch

    todo = {}
    for k in sorted(kinds, key=lambda k: not k.cached):  # cached first: they time the post-hoc part
        if k.identity in todo:
            continue
        if k.cached and (frozen is None or (k.cfg.backbone, k.cfg.image_size) != (frozen.backbone, frozen.image_size)):
            continue
        todo[k.identity] = k.cfg

    def run() -> dict[tuple, EpochCost]:
        if here:
            threads = torch.get_num_threads()
            try:
                return _measure_all(todo, bundle, store, cpus, share, grid)
            finally:
                torch.set_num_threads(threads)
        task = ray.remote(_measure_all).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        return ray.get(task.remote(todo, bundle, store.for_trials(), cpus, share, grid))

    if data is None or not todo:
        return run(), None
    names = {json.dumps(identity): identity for identity in todo}
    inputs = {"kinds": {name: todo[identity].to_dict() for name, identity in names.items()}, "data": data,
              "cpus": cpus, "gpus": gpus, "here": here, "share": share,
              "grid": dataclasses.asdict(grid) if grid is not None else None, "machine": _machine()}
    result = cached_probe(store.cache_root, "cost", inputs, lambda: {
        json.dumps(identity): _record(c) for identity, c in run().items()}, names, fresh)
    costs = {names[name]: EpochCost(r["train_seconds"], r["eval_seconds"], r["posthoc_seconds"], bool(r["cached"]))
             for name, r in result.records.items()}
    return costs, result.measured if result.cached else None


def _record(c: EpochCost) -> dict[str, float]:
    return {"train_seconds": c.train_seconds, "eval_seconds": c.eval_seconds, "posthoc_seconds": c.posthoc_seconds,
            "cached": float(c.cached)}


def _machine() -> dict:
    """What an epoch's cost here depends on beyond the trial: the CPUs this process may use, their
    model, torch's build, and the GPUs."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                 platform.processor())
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpus": sorted(os.sched_getaffinity(0)), "cpu": model, "torch": torch.__version__, "gpus": gpus}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _measure_all(todo: dict, bundle, store, cpus: float, share: float, grid: PosthocConfig | None
                 ) -> dict[tuple, EpochCost]:
    from hiertune.training.probe import measure_epoch

    costs, posthoc = {}, None
    for identity, cfg in todo.items():
        costs[identity] = measure_epoch(cfg, bundle, store, cpus, posthoc_seconds=posthoc, full_share=share,
                                        posthoc=grid)
        posthoc = costs[identity].posthoc_seconds
    return costs


def expected_epochs(space: SearchSpace, epochs: int) -> float:
    """Epochs an average trial runs: ASHA (and MO-ASHA) keep 1/reduction_factor at each rung."""
    s = space.scheduler
    last = min(epochs, s.max_t)
    if not s.spec.early_stopping or s.grace_period >= last:
        return float(last)
    total, rung, share = float(s.grace_period), s.grace_period, 1.0
    while rung < last:
        share /= s.reduction_factor
        nxt = min(rung * s.reduction_factor, last)
        total += share * (nxt - rung)
        rung = nxt
    return total


def first_rung(space: SearchSpace, epochs: int) -> int:
    """Epochs before the scheduler can judge a trial."""
    s = space.scheduler
    return min(s.grace_period, epochs, s.max_t) if s.spec.early_stopping else min(epochs, s.max_t)


@dataclass(frozen=True)
class Plan:
    """The cost report, and the space a budget leaves."""

    lines: list[str]
    space: SearchSpace
    left_out: str | None  # the one line saying what the budget left out
    refusal: str | None = None  # why no sweep fits the budget at all
    drops: dict[str, list] = dataclasses.field(default_factory=dict)  # what it left out, by axis (`without`)


def plan(space: SearchSpace, kinds: list[Kind], costs: dict[tuple, EpochCost], parallel: int,
         measured: str | None = None) -> Plan:
    """`measured`: when an earlier sweep measured `costs` (None: this one did)."""
    when, again = (f", by an earlier sweep at {measured}", "; --remeasure measures again") if measured else ("", "")
    lines = [f"cost here, one epoch measured on a few batches{when} ({parallel} trial(s) at a time, "
             f"{space.resources.cpus_per_trial:g} CPU(s) each{again}):"]
    shown = set()
    for k in kinds:
        if k.identity in shown:
            continue
        shown.add(k.identity)
        cost = costs.get(k.identity)
        lines.append(f"  {k.label():<64} " + (f"~{duration(cost.seconds)}/epoch" if cost else "not measured"))
    budget = space.budget
    epochs = space.trial_config().epochs
    mean = _mean_epoch(kinds, costs)
    if mean is not None:
        per_trial = expected_epochs(space, epochs)
        total = space.tune.num_samples * per_trial * mean / parallel
        lines.append(f"whole sweep: ~{duration(total)} ({space.tune.num_samples} trials x ~{per_trial:.1f} epochs"
                     f"{' under ' + space.scheduler.label if space.scheduler.spec.early_stopping else ''}, {parallel} at a "
                     f"time)" + (f"; budget {duration(budget)}" if budget else ""))
    cheap = min((k for k in kinds if k.cached and k.identity in costs), key=lambda k: costs[k.identity].seconds,
                default=None)
    # Worth naming when it is far cheaper than the average trial.
    if cheap is not None and mean and costs[cheap.identity].seconds < mean / 3:
        lines.append(f"cheap route: {_cheap_flags(space, cheap)} (frozen features, computed once) "
                     f"~{duration(costs[cheap.identity].seconds)}/epoch")
    if not budget:
        return Plan(lines, space, None)
    rung = first_rung(space, epochs)
    affordable = {k.identity: (c := costs.get(k.identity)) is None or rung * c.seconds <= budget / TRIALS_PER_SLOT
                  for k in kinds}
    drops = _prune(space, kinds, affordable)
    if not any(affordable[k.identity] for k in kinds):
        return Plan(lines, space, None, f"budget {duration(budget)}: no kind of trial this space samples reaches its "
                    f"first {space.scheduler.label} rung ({rung} epoch(s)) in a quarter of the budget here; raise --budget"
                    + (f", or take the cheap route: {_cheap_flags(space, cheap)}" if cheap is not None else ""))
    if not drops:
        return Plan(lines, space, None)
    dropped = "; ".join(f"{name}={', '.join(str(v) for v in values)}" for name, values in drops.items())
    line = (f"budget {duration(budget)}: left out {dropped} (one trial would not reach the first "
            f"{space.scheduler.label} rung, {rung} epoch(s), in a quarter of the budget here)")
    return Plan(lines, without(space, drops), line, drops=drops)


def _mean_epoch(kinds: list[Kind], costs: dict[tuple, EpochCost]) -> float | None:
    weighed = [(k.weight, costs[k.identity].seconds) for k in kinds if k.weight > 0 and k.identity in costs]
    total = sum(w for w, _ in weighed)
    return sum(w * s for w, s in weighed) / total if total else None


def _cheap_flags(space: SearchSpace, kind: Kind) -> str:
    """The --set flags that make every trial of the space the cheap kind (those it lacks)."""
    base = space.trial_config()
    searched = {p.name for p in space.sampled}
    return " ".join(f"--set {name}={kind.values.get(name, getattr(kind.cfg, name))}" for name in AXES
                    if name in searched or getattr(base, name) != getattr(kind.cfg, name))


def _prune(space: SearchSpace, kinds: list[Kind], affordable: dict[tuple, bool]) -> dict[str, list]:
    """Every searched categorical value whose kinds are all unaffordable, by axis. An axis none of
    whose values is affordable is not among them: plan() refuses such a space instead."""
    searched = {p.name: p for p in space.sampled}
    drops: dict[str, list] = {}
    for name in AXES:
        p = searched.get(name)
        if p is None or p.type != "categorical":
            continue
        values = [v for v in p.choices
                  if (having := [k for k in kinds if k.values.get(name) == v])
                  and not any(affordable[k.identity] for k in having)]
        if values and len(values) < len(p.choices):
            drops[name] = values
    return drops


def without(space: SearchSpace, drops: dict[str, list]) -> SearchSpace:
    """The space with `drops` ({axis: values}, a budget's) no longer sampled: an axis left with
    one value is fixed to it. A resumed sweep applies its first run's drops again."""
    fixed = {}
    params = list(space.params)
    for name, values in drops.items():
        p = next((q for q in space.sampled if q.name == name), None)
        if p is None:
            continue
        keep = [c for c in p.choices if c not in values]
        if len(keep) == 1:
            fixed[name] = keep[0]
            continue
        params = [_without(q, name, values) for q in params]
        params = [q for q in params if q is not None]
    pruned = dataclasses.replace(space, params=tuple(params))
    return pruned.with_overrides(fixed) if fixed else pruned


def _without(q, name: str, values: list):
    """Param `q` once `name` no longer takes `values`: its choices, or its `when` condition."""
    if q.name == name:
        choices = tuple(c for c in q.choices if c not in values)
        return dataclasses.replace(q, choices=choices, default=q.default if q.default in choices else None)
    if q.when and name in q.when:
        allowed = tuple(v for v in q.when[name] if v not in values)
        if not allowed:
            return None  # its condition can never hold now
        return dataclasses.replace(q, when={**q.when, name: allowed})
    return q
