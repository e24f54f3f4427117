"""The early-stopping schedulers a space can name (`scheduler.type`), as a table of specs.

Each entry says how the console, plots and summary name it, whether it stops trials early (then
it reads results at the rungs grace_period·η^k below max_t, as Ray's ASHA places them, and
every other setting keeps its meaning), which settings are its own, and how to build it with
Ray's scheduler API. Adding one is one entry here (and, for a scheduler of our own, its module).
The builders import Ray when a sweep starts: reading a space (`hiertune train`) does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler


@dataclass(frozen=True)
class SchedulerSettings:
    type: str = "asha"
    max_t: int = 10
    grace_period: int = 1
    reduction_factor: int = 3
    # MO-ASHA only: objective gaps up to this count as noise (hiertune.sweep.moasha). 0.01 is one
    # image in a hundred, about the standard error of an accuracy on a thousand validation images.
    epsilon: float = 0.01

    @property
    def spec(self) -> SchedulerSpec:
        return SCHEDULERS[self.type]

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def rungs(self) -> tuple[int, ...]:
        """The epochs at which the scheduler reads a trial's results (grace_period·η^k below
        max_t, and max_t); one that never stops early reads only the last."""
        if not self.spec.early_stopping:
            return ()
        rungs, t = [], self.grace_period
        while t < self.max_t:
            rungs.append(t)
            t *= self.reduction_factor
        return (*rungs, self.max_t)


@dataclass(frozen=True)
class Objectives:
    """What a scheduler ranks trials by (hiertune.sweep.search.objectives)."""

    scalar: str  # one metric, maximised (the front's hypervolume, or the sampled point's objective)
    pair: tuple[str, str]  # (seen, unseen)
    points_key: str | None  # each result's own front as [[seen, unseen], ...]; None: the pair's one point


# (settings, objectives) -> (the Ray scheduler, the Ray callbacks that carry its state through --resume)
Build = Callable[[SchedulerSettings, Objectives], "tuple[TrialScheduler, list]"]


@dataclass(frozen=True)
class SchedulerSpec:
    label: str
    early_stopping: bool
    build: Build
    own_settings: tuple[str, ...] = ()  # settings of SchedulerSettings only this scheduler reads


def _asha(s: SchedulerSettings, o: Objectives) -> tuple[TrialScheduler, list]:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", metric=o.scalar, mode="max", max_t=s.max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor), []


def _moasha(s: SchedulerSettings, o: Objectives) -> tuple[TrialScheduler, list]:
    from hiertune.sweep.moasha import MOASHAScheduler, SchedulerState

    # Ray keeps a scheduler's state only as it was first built: the callback carries it.
    moasha = MOASHAScheduler(list(o.pair), mode="max", points_key=o.points_key, max_t=s.max_t,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor, epsilon=s.epsilon)
    return moasha, [SchedulerState(moasha)]


def _fifo(s: SchedulerSettings, o: Objectives) -> tuple[TrialScheduler, list]:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler(), []


SCHEDULERS: dict[str, SchedulerSpec] = {
    "asha": SchedulerSpec("ASHA", True, _asha),  # ASHA on each trial's front hypervolume
    "moasha": SchedulerSpec("MO-ASHA", True, _moasha, own_settings=("epsilon",)),  # on the fronts themselves
    "fifo": SchedulerSpec("FIFO", False, _fifo),  # every trial runs max_t epochs
}
