"""MO-ASHA: asynchronous successive halving that stops trials on the Pareto front itself.

Ray's ASHA ranks a trial at a rung by one scalar; hiertune's is the hypervolume of the trial's
own post-hoc front. That stops a trial whose curve is the only one reaching a corner of the
front (say the highest unseen accuracy, at a poor seen one) whenever its area is small. This
scheduler keeps ASHA's rungs and its asynchronous rule, and changes only the ranking.

Rungs and promotion (as Ray's ASHA, one bracket): rungs sit at grace_period·η^k below max_t. A
trial reaching a rung is ranked among every trial recorded there so far plus itself, and goes on
iff its position k (0 = best) among those n trials satisfies k·η < n, i.e. it is in the top 1/η.
Nobody waits for a full rung: the first trial at a rung always goes on, a second one only if it
beats the first (for η ≥ 2), and so on. Trials reaching max_t are stopped, as ASHA does.

Ranking point sets: at a rung each trial brings a set of points (its post-hoc front, or its one
point when Optuna samples the thresholds). Trials are sorted into levels: level 0 holds the
trials with a point on the non-dominated front of all points at the rung, level 1 those with a
point on the front once level 0's trials are removed, and so on, so a trial that owns one
non-dominated corner is on level 0 however small its area is. Trials on
one level are ordered by an ε-net (farthest-first traversal, Clarkson 2005), the tie-break
Syne Tune's MOASHA uses (Schmucker et al. 2021), lifted to sets: the first is the trial holding
the level's point with the highest first objective, each next one the trial whose level points
reach farthest from the points already taken (the directed Hausdorff distance: the largest, over
its points, of the Euclidean distance to the nearest taken point). Ties go to the trial recorded
first; a trial without a finite point ranks last.

Why ε-net and not hypervolume contribution: the tie-break decides which of several
non-dominated trials go on, and what the sweep wants from them is coverage of the front. The
ε-net promotes the trial that adds the most distant stretch of front, corners included, while
a hypervolume contribution is the same area criterion ASHA-on-hypervolume already uses (it
favours the bulging middle and depends on the reference point). With single points the rule is
Syne Tune's MOASHA exactly. Objectives are compared on their own scales, unnormalised: both of
hiertune's are accuracies in [0, 1].

ε-dominance: a post-hoc front ends in a saturated corner (τ_sub → 1 rejects every subclass:
unseen → 1 for every trial), where trials differ by a few images, so with exact dominance a
weak trial reaches level 0 by that sliver alone. With `epsilon` > 0, levels are built trial by
trial: a level takes first the trials with a front point that no other remaining trial comes
within ε of in both objectives (better somewhere by more than noise), then the trials with a
front point that none of those first ones comes within ε of (the exact winner of a near tie
that no distinct trial already holds). A trial's points that put it on its level are what the
ε-net sees. With no distinct trial at all every trial on the exact front shares the level, and
`epsilon` = 0 is plain non-dominated sorting over trials. The space's default ε is 0.01.

State: Ray 2.x never calls a scheduler's save/restore and rebuilds it from `tuner.pkl` as first
built, so `Tuner.restore` would start with empty rungs. `SchedulerState` is a Ray callback that
carries the rungs in Ray's own experiment checkpoint (callbacks are saved and restored there);
it must be pickled with the scheduler (both in one Tuner), so that both unpickle as one object
graph.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hiertune.fsutil import atomic_file
from hiertune.novelty.metrics import pareto_front


def nondominated_levels(points: np.ndarray) -> np.ndarray:
    """Front index of each row of `points` [N, 2] when maximising both (0: non-dominated,
    1: non-dominated once level 0 is removed, ...); rows with a NaN get -1. Equal rows share
    a level: neither dominates the other."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    levels = np.full(len(points), -1, dtype=np.int64)
    valid = np.flatnonzero(~np.isnan(points).any(1))
    if not len(valid):
        return levels
    unique, inverse = np.unique(points[valid], axis=0, return_inverse=True)
    unique_levels = np.full(len(unique), -1, dtype=np.int64)
    remaining, level = np.arange(len(unique)), 0
    while len(remaining):
        front = remaining[pareto_front(unique[remaining])]
        unique_levels[front] = level
        remaining = np.setdiff1d(remaining, front)
        level += 1
    levels[valid] = unique_levels[inverse.ravel()]
    return levels


def rank_trials(sets: dict[str, np.ndarray], epsilon: float = 0.0) -> list[str]:
    """Trial ids best first, by non-dominated level (ε-dominance when `epsilon` > 0) then ε-net;
    see the module docstring. `sets` maps each trial to its points [n_i, 2] (maximised), in the
    order they were recorded."""
    ids = list(sets)
    arrays = [np.asarray(sets[t], dtype=float).reshape(-1, 2) for t in ids]
    arrays = [a[np.isfinite(a).all(1)] for a in arrays]
    remaining = [i for i, a in enumerate(arrays) if len(a)]
    order: list[str] = []
    while remaining:
        level = _level(remaining, arrays, epsilon)
        order += [ids[i] for i in _epsilon_net(sorted(level), level)]
        remaining = [i for i in remaining if i not in level]
    return order + [ids[i] for i, a in enumerate(arrays) if not len(a)]


def _level(remaining: list[int], arrays: list[np.ndarray], epsilon: float) -> dict[int, np.ndarray]:
    """The trials among `remaining` on the next level, each with the points that put it there.
    A trial's candidates are its points on the non-dominated front of all remaining points.
    With ε > 0, first come the trials with a candidate no other trial ε-covers (has a point at
    most ε worse in both objectives): they are better somewhere by more than noise. Then the
    trials with a candidate that none of those first ones ε-covers: the exact winners of near
    ties nobody distinct already holds. Never empty: with no distinct trial, every trial with a
    candidate is on the level."""
    points = np.concatenate([arrays[i] for i in remaining])
    owner = np.concatenate([np.full(len(arrays[i]), i) for i in remaining])
    front = nondominated_levels(points) == 0
    candidates = {i: points[front & (owner == i)] for i in remaining}

    def uncovered(i: int, by: list[int]) -> np.ndarray:
        own, others = candidates[i], points[np.isin(owner, by)]
        if epsilon == 0 or not len(own) or not len(others):
            return own
        return own[~(others[None, :, :] >= own[:, None, :] - epsilon).all(2).any(1)]

    distinct = {i: u for i in remaining if len(u := uncovered(i, [j for j in remaining if j != i]))}
    level = dict(distinct)
    for i in remaining:
        if i not in distinct and len(u := uncovered(i, list(distinct))):
            level[i] = u
    return level


def _epsilon_net(members: list[int], own: dict[int, np.ndarray]) -> list[int]:
    """Farthest-first order of trials by their point sets on one level (ties: listed first)."""
    first = max(members, key=lambda i: (own[i][:, 0].max(), own[i][:, 1].max(), -i))
    order, taken = [first], own[first]
    rest = [i for i in members if i != first]
    while rest:
        reach = [float(np.linalg.norm(own[i][:, None, :] - taken[None, :, :], axis=2).min(1).max()) for i in rest]
        pick = rest[int(np.argmax(reach))]  # argmax keeps the first of equals
        order.append(pick)
        taken = np.concatenate([taken, own[pick]])
        rest.remove(pick)
    return order


class MOASHAScheduler(FIFOScheduler):
    """ASHA with multi-objective promotion (see the module docstring).

    Each result gives the trial's points either as a list under `points_key` (each point its
    `objectives` values in order) or, without `points_key`, as the one point of the
    `objectives` values themselves. `mode` is "max" or "min", for all objectives or per one."""

    def __init__(self, objectives: Sequence[str], mode: str | Sequence[str] = "max", points_key: str | None = None,
                 time_attr: str = "training_iteration", max_t: int = 100, grace_period: int = 1,
                 reduction_factor: int = 3, epsilon: float = 0.0):
        modes = [mode] * len(objectives) if isinstance(mode, str) else list(mode)
        if len(objectives) != 2 or len(modes) != 2 or any(m not in ("max", "min") for m in modes):
            raise ValueError(f"MO-ASHA ranks two objectives, each 'max' or 'min'; got {list(objectives)} {modes}")
        if not (0 < grace_period <= max_t and reduction_factor >= 2 and 0 <= epsilon < 1):
            raise ValueError("MO-ASHA needs 0 < grace_period <= max_t, reduction_factor >= 2 and 0 <= epsilon < 1")
        super().__init__()
        self._objectives = tuple(objectives)
        self._sign = np.array([1.0 if m == "max" else -1.0 for m in modes])
        self._points_key = points_key
        self._time_attr = time_attr
        self._max_t = max_t
        self._rf = reduction_factor
        self._epsilon = epsilon
        milestones, t = [], grace_period
        while t < max_t:
            milestones.append(t)
            t *= reduction_factor
        # milestone -> {trial_id: its points there, maximised}; dicts keep recording order
        self._rungs: dict[int, dict[str, list[list[float]]]] = {m: {} for m in milestones}
        self._num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        # Its objectives are its own; a TuneConfig metric/mode would be a second, conflicting one.
        return metric is None and mode is None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            self._num_stopped += 1
            return TrialScheduler.STOP
        action = self.decide(trial.trial_id, result)
        self._num_stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        # A trial ending between rungs (its last epoch, a stop) still leaves its points where it got to.
        if result and self._time_attr in result and result[self._time_attr] < self._max_t:
            self.decide(trial.trial_id, result)

    def decide(self, trial_id: str, result: dict) -> str:
        """Record the trial at the highest rung it has reached and not yet been ranked at, and
        say whether it goes on. A result without the objectives (a failure report) changes nothing."""
        points = self._points(result)
        reached = [m for m in self._rungs if m <= result[self._time_attr]]
        if points is None or not reached or trial_id in self._rungs[reached[-1]]:
            return TrialScheduler.CONTINUE
        rung = self._rungs[reached[-1]]
        rung[trial_id] = points.tolist()
        order = rank_trials({t: np.asarray(p).reshape(-1, 2) for t, p in rung.items()}, self._epsilon)
        return TrialScheduler.CONTINUE if order.index(trial_id) * self._rf < len(order) else TrialScheduler.STOP

    def _points(self, result: dict) -> np.ndarray | None:
        if self._points_key is not None:
            raw = result.get(self._points_key)
        elif all(o in result for o in self._objectives):
            raw = [[result[o] for o in self._objectives]]
        else:
            raw = None
        if raw is None:
            return None
        points = np.asarray(raw, dtype=float).reshape(-1, 2) * self._sign
        return points[np.isfinite(points).all(1)]

    def debug_string(self) -> str:
        rungs = " | ".join(f"t={m}: {len(r)} trials" for m, r in self._rungs.items())
        return f"Using MO-ASHA: num_stopped={self._num_stopped}; {rungs}"

    def get_state(self) -> dict:
        return {"rungs": [[m, list(r.items())] for m, r in self._rungs.items()], "num_stopped": self._num_stopped}

    def set_state(self, state: dict) -> None:
        rungs = {int(m): dict((t, p) for t, p in recorded) for m, recorded in state["rungs"]}
        if set(rungs) != set(self._rungs):
            raise ValueError(f"saved MO-ASHA rungs {sorted(rungs)} do not match this scheduler's {sorted(self._rungs)}")
        self._rungs = rungs
        self._num_stopped = int(state["num_stopped"])

    def save(self, checkpoint_path: str) -> None:
        with atomic_file(checkpoint_path) as tmp:
            tmp.write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


class SchedulerState(Callback):
    """Carries an MO-ASHA scheduler's rungs through Ray's experiment checkpoint, which saves
    and restores callbacks' state but not the scheduler's (see the module docstring)."""

    def __init__(self, scheduler: MOASHAScheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return {"moasha": self.scheduler.get_state()}

    def set_state(self, state: dict) -> None:
        self.scheduler.set_state(state["moasha"])
