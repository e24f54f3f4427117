"""Optuna behind Ray Tune: the define-by-run space and what Optuna learns from stopped trials.

The scheduler stops trials early: ASHA on one scalar (each trial's own front hypervolume) or
MO-ASHA on the fronts themselves (hiertune.sweep.moasha). Ray's OptunaSearch would tell Optuna that a
stopped trial COMPLETED with the value it had at its last rung, so a
trial stopped after 2 epochs would sit in Optuna's history beside finished ones as if 2 epochs
were all it could do. Here a stopped trial is told as PRUNED, with its last value reported as an
intermediate value at its epoch: TPE then ranks it below every completed trial (and among pruned
ones by how far it got), and NSGA-II, which selects only among completed trials, ignores it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from hiertune.sweep.records import TrialOutcome
from hiertune.sweep.space import SearchSpace
from hiertune.training.faults import FAILURE_KEY
from hiertune.training.records import HYPERVOLUME, POINT, POINT_OBJECTIVE


def objectives(space: SearchSpace) -> tuple[str, list[str]]:
    """What ASHA and Optuna rank by: with post-hoc thresholds, the trial's own front hypervolume
    (one scalar) or its best (seen, unseen) point for NSGA-II; with sampled thresholds, the one
    point the sampled thresholds give. MO-ASHA ranks by the pair (post hoc: the whole front)."""
    if space.samples_thresholds:
        return POINT_OBJECTIVE, [f"{POINT}seen", f"{POINT}unseen"]
    return HYPERVOLUME, ["seen", "unseen"]


class DefineByRun:
    """Samples the non-post-hoc parameters, honouring `when` conditions, and returns the fixed
    ones. A class rather than a closure: OptunaSearch pickles it into the sweep's state."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        space = self.space
        values: dict[str, Any] = {"family": space.family, **space.fixed}
        for p in space.sampled:
            if not p.active(values):
                continue
            if p.type == "categorical":
                values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
            elif p.type == "int":
                values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                values[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        for p in space.posthoc:  # declared values, the one point each trial also reports
            values.setdefault(p.name, p.midpoint())
        values["trial_number"] = trial.number
        return values


OPTUNA_DB = "optuna.db"  # the sweep's Optuna study, beside its other files: `optuna-dashboard sqlite:///…/optuna.db`


def study_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / OPTUNA_DB).resolve()}"


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    seed = space.tune.seed
    if space.tune.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if space.tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


@contextmanager
def _replayed_steps_quiet():
    """A trial resumed from its last checkpoint reports again the epochs it had run after it;
    Optuna keeps the value first reported at a step, which is what we want, but warns on the
    user's console for every replayed one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The reported value is ignored because this `step=",
                                category=UserWarning)
        yield


class FidelityAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial ASHA stopped was PRUNED (see above)."""

    def __init__(self, space: SearchSpace, sweep_dir: Path | None = None, study_name: str = "optuna"):
        multi = space.tune.sampler == "nsga2"
        self._scalar, pair = objectives(space)
        # Persisted (an RDB storage in the sweep folder) so Optuna Dashboard and the importance
        # evaluators can open the study during and after the sweep; in memory without a folder.
        storage = optuna.storages.RDBStorage(study_url(sweep_dir)) if sweep_dir is not None else None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per study and trial otherwise
        super().__init__(space=DefineByRun(space), metric=pair if multi else self._scalar,
                         mode=["max", "max"] if multi else "max", sampler=make_sampler(space),
                         storage=storage, study_name=study_name)  # the seed lives in the sampler
        self._max_t = space.scheduler.max_t
        self._epochs: dict[str, int] = {}  # each trial's own epochs: ASHA stopped it only before these
        self._multi = multi

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):  # not Searcher.FINISHED
            self._epochs[trial_id] = int(config.get("epochs", self._max_t))
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if FAILURE_KEY not in result:  # a final failure's report has no metrics; its error follows
            with _replayed_steps_quiet():
                super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if error or result is None or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        outcome = TrialOutcome.read(trial_id, result, {"epochs": self._epochs.get(trial_id, self._max_t)}, self._max_t,
                                    ended=True)
        if ot_trial is not None and outcome.last is not None:
            # The trial's recommended point, for importance on seen and unseen (hiertune.sweep.importance).
            ot_trial.set_user_attr("seen", outcome.last.recommended.seen)
            ot_trial.set_user_attr("unseen", outcome.last.recommended.unseen)
        if outcome.status != "stopped":
            super().on_trial_complete(trial_id, result, error)
            return
        value = result.get(self._scalar)  # the metric Optuna was given, by the name it was given
        if value is not None and not self._multi:  # Optuna has no intermediate values for several objectives
            with _replayed_steps_quiet():
                ot_trial.report(float(value), step=outcome.epochs)
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)
