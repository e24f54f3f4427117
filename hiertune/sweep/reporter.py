"""The sweep's live console: one line per trial event and a status line, instead of Ray's tables.

    [0:42] trial-02 epoch 2/4   seen 0.512  unseen 0.701  hv 0.388
    [0:58] trial-02 stopped by ASHA after 2 of 4 epochs  (seen 0.512, unseen 0.701, hv 0.388)
           3/6 done, 2 running · best so far trial-01: seen 0.604, unseen 0.733 (msp) · ETA ~1m10s

A Tune callback in the driver, so it sees every trial's events as Ray handles them; Ray's own
progress tables come back with `--verbose`. "Best so far" is the sweep's pick applied to each
trial's latest recommended point, the same rule the final front uses on every point.
"""

from __future__ import annotations

import logging
import time

from ray import tune

from hiertune.progress import duration
from hiertune.sweep.front import Pick
from hiertune.sweep.state import trial_status
from hiertune.training.faults import FAILURE_KEY

log = logging.getLogger("hiertune")


class ConsoleReporter(tune.Callback):
    def __init__(self, total: int, max_t: int, pick: Pick, sampled: list[str], stopped_by: str,
                 budget: float | None = None):
        self.total, self.max_t, self.pick, self.sampled, self.stopped_by = total, max_t, pick, sampled, stopped_by
        self.budget = budget
        self._start = time.monotonic()
        self._done: set[str] = set()
        self._running: set[str] = set()
        self._points: dict[str, dict] = {}  # trial → its latest recommended point

    def __getstate__(self) -> dict:  # a resumed sweep starts its clock again
        return {**self.__dict__, "_start": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _start=time.monotonic(), _running=set())

    def on_trial_start(self, iteration, trials, trial, **info):
        self._running.add(trial.trial_id)
        params = "  ".join(f"{k}={_fmt(trial.config[k])}" for k in self.sampled if k in trial.config)
        self._say(f"{_name(trial)} started  {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if FAILURE_KEY in result or "seen" not in result:
            return
        point = {"trial": _name(trial), "trial_id": trial.trial_id, "seen": result["seen"],
                 "unseen": result["unseen"], "score": result.get("recommended_score", "")}
        self._points[trial.trial_id] = point
        self._say(f"{_name(trial)} epoch {result.get('training_iteration', '?')}/{self._epochs(trial)}   "
                  f"{_measures(result)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        done = int(last.get("training_iteration", 0))
        if trial_status(done, self._epochs(trial), self.max_t) == "stopped":
            what = f"stopped by {self.stopped_by} after {done} of {self._epochs(trial)} epochs"
        else:
            what = f"finished {done} epochs"
        self._end(trial, trials, f"{what}  ({_measures(last)})")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = (trial.last_result or {}).get(FAILURE_KEY) or "see its error file in the sweep's tune/ folder"
        self._end(trial, trials, f"failed: {reason}")

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
        # The last line leaves the best to the recommended point printed next, picked from every
        # epoch's whole post-hoc front, which a trial's latest point need not be.
        if self._points and left:
            best = self.pick.rank(list(self._points.values()))[0]
            parts.append(f"best so far {best['trial']}: seen {best['seen']:.3f}, unseen {best['unseen']:.3f}"
                         + (f" ({best['score']})" if best["score"] else ""))
        if self._done and left:  # at the pace of the trials this run of the sweep finished
            eta = (time.monotonic() - self._start) / len(self._done) * left
            budget = getattr(self, "budget", None)  # a reporter pickled before budgets existed has none
            beyond = f", beyond the {duration(budget)} budget" if budget and eta > budget else ""
            parts.append(f"ETA ~{duration(eta)}{beyond}")
        return " · ".join(parts)

    def _epochs(self, trial) -> int:
        return min(int(trial.config.get("epochs", self.max_t)), self.max_t)

    def _say(self, text: str) -> None:
        log.info("[%s] %s", duration(time.monotonic() - self._start, clock=True), text)


def _name(trial) -> str:
    return f"trial-{trial.config.get('trial_number', 0):02d}"


def _measures(result: dict) -> str:
    if "seen" not in result:
        return "no result"
    return f"seen {result['seen']:.3f}  unseen {result['unseen']:.3f}  hv {result.get('hypervolume', float('nan')):.3f}"


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
