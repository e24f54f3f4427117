"""The sweep's live console: one line per trial event and a status line, instead of Ray's tables.

    [0:42] trial-02 epoch 2/4   seen 0.512  unseen 0.701  hv 0.388
    [0:58] trial-02 stopped by ASHA after 2 of 4 epochs  (seen 0.512, unseen 0.701, hv 0.388)
           3/6 done, 2 running · best so far trial-01: seen 0.604, unseen 0.733 · ETA ~1m10s

A Tune callback in the driver, so it sees every trial's events as Ray handles them; Ray's own
progress tables come back with `--verbose`. "Best so far" is the sweep's pick applied to each
trial's latest points on the front, the same rule the final front uses on the same points.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ray import tune

from hiertune.progress import duration
from hiertune.sweep.front import Pick, compute_front
from hiertune.sweep.records import TrialOutcome, trial_name
from hiertune.training.records import EpochMetrics

log = logging.getLogger("hiertune")


@dataclass(frozen=True)
class _Pair:
    """A trial's (seen, unseen) point as the final front would take it."""

    trial: str
    seen: float
    unseen: float


class ConsoleReporter(tune.Callback):
    def __init__(self, total: int, max_t: int, pick: Pick, sampled: list[str], stopped_by: str,
                 budget: float | None = None, sampled_thresholds: bool = False):
        self.total, self.max_t, self.pick, self.sampled, self.stopped_by = total, max_t, pick, sampled, stopped_by
        self.budget = budget
        self.sampled_thresholds = sampled_thresholds
        self._start = time.monotonic()
        self._done: set[str] = set()
        self._running: set[str] = set()
        self._points: dict[str, list[_Pair]] = {}  # trial → the points of its latest epoch on the sweep's front

    def __getstate__(self) -> dict:  # a resumed sweep starts its clock again
        return {**self.__dict__, "_start": None}

    def __setstate__(self, state: dict) -> None:
        # A reporter pickled by an older hiertune kept each trial's point as a dict: started again.
        self.__dict__.update(state, _start=time.monotonic(), _running=set(), _points={})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._running.add(trial.trial_id)
        params = "  ".join(f"{k}={_fmt(trial.config[k])}" for k in self.sampled if k in trial.config)
        self._say(f"{_name(trial)} started  {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        outcome = TrialOutcome.read(trial.trial_id, result, trial.config, self.max_t)
        if outcome.last is None:  # a final failure's report: its error follows
            return
        sampled = getattr(self, "sampled_thresholds", False)  # a reporter pickled before it was kept
        self._points[trial.trial_id] = [_Pair(outcome.name, s, u) for s, u in outcome.last.pairs(sampled)]
        self._say(f"{outcome.name} epoch {outcome.last.epoch}/{outcome.planned}   {_measures(outcome.last)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = TrialOutcome.of_trial(trial, self.max_t)
        if outcome.status == "stopped":
            what = f"stopped by {self.stopped_by} after {outcome.epochs} of {outcome.planned} epochs"
        else:
            what = f"finished {outcome.epochs} epochs"
        self._end(trial, trials, f"{what}  ({_measures(outcome.last)})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._points.pop(trial.trial_id, None)  # a failed trial has no place on the front
        self._end(trial, trials, f"failed: {TrialOutcome.of_trial(trial, self.max_t, failed=True).failure}")

    def _end(self, trial, trials, text: str) -> None:
        self._running.discard(trial.trial_id)
        self._done.add(trial.trial_id)
        self._say(f"{_name(trial)} {text}")
        # Counted from Tune's own trial list: a resumed sweep's earlier trials count too.
        ended = 1 + sum(t.status in (t.TERMINATED, t.ERROR) for t in trials or () if t is not trial)
        log.info("       %s", self.status(max(ended, len(self._done))))

    def status(self, ended: int | None = None) -> str:
        ended = len(self._done) if ended is None else ended
        parts = [f"{ended}/{self.total} done, {len(self._running)} running"]
        left = self.total - ended
        # The last line leaves the best to the recommended point printed next.
        if left and (best := self.best()) is not None:
            parts.append(f"best so far {best.trial}: seen {best.seen:.3f}, unseen {best.unseen:.3f}")
        if self._done and left:  # at the pace of the trials this run of the sweep finished
            eta = (time.monotonic() - self._start) / len(self._done) * left
            budget = getattr(self, "budget", None)  # a reporter pickled before budgets existed has none
            beyond = f", beyond the {duration(budget)} budget" if budget and eta > budget else ""
            parts.append(f"ETA ~{duration(eta)}{beyond}")
        return " · ".join(parts)

    def best(self) -> _Pair | None:
        """The recommended point as it stands: the sweep's pick on the front of every trial's
        latest points, the rule the sweep's end applies to the same points."""
        front = compute_front([p for points in self._points.values() for p in points])
        return self.pick.rank(front)[0] if front else None

    def _say(self, text: str) -> None:
        log.info("[%s] %s", duration(time.monotonic() - self._start, clock=True), text)


def _name(trial) -> str:
    return trial_name(trial.config.get("trial_number"), trial.trial_id)


def _measures(metrics: EpochMetrics | None) -> str:
    if metrics is None:
        return "no result"
    return (f"seen {metrics.recommended.seen:.3f}  unseen {metrics.recommended.unseen:.3f}  "
            f"hv {metrics.hypervolume:.3f}")


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
