"""MLflow records of a sweep: one experiment per sweep, a parent run, a child run per trial.

Ray's MLflowLoggerCallback neither nests runs nor keeps a single writer, so this Tune callback
logs through MlflowClient from the driver: nested child runs, and one process per sweep touching
the store (sweeps sharing a store: hiertune.sweep.mlstore). Which MLflow run belongs to which trial is
kept in the sweep folder, so `--resume` logs into the same runs and never twice.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Collection
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from ray import tune

from hiertune.errors import UserError, first_line
from hiertune.fsutil import atomic_file, check_writable
from hiertune.secrets import redact, redact_param, redact_uri
from hiertune.storage import checkpoint_uri
from hiertune.sweep.mlstore import open_client, sqlite_path
from hiertune.sweep.place import SweepPlace
from hiertune.sweep.plots import plot_learning_curves
from hiertune.sweep.records import TrialOutcome, trial_name
from hiertune.sweep.state import TrialRecord, read_json
from hiertune.training.checkpoint import read_history
from hiertune.training.faults import FAILURE_KEY
from hiertune.training.records import POINT, EpochMetrics

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "hiertune.role"  # "sweep" on the parent run, which has no trial id to be found by
NOTE_TAG = "mlflow.note.content"  # the description MLflow's UI shows
EXPERIMENT_NOTE = ("hiertune sweep {sweep}: one nested run per trial under the sweep's parent run. A trial's params "
                   "are what Optuna sampled or the space fixed; its seen/unseen/tau_* metrics are its recommended "
                   "post-hoc point (the knee of its own front), hypervolume is that front's area. "
                   "hiertune.status says how it ended: completed, stopped (early, by the space's scheduler), failed, interrupted.")
PARENT_NOTE = ("The sweep: its settings as params, the Pareto front (pareto.csv/png/html), learning curves, "
               "parameter importance; best_* is the sweep's recommended point, the one export-best retrains.")
RUN_STATUS = {"failed": "FAILED", "interrupted": "KILLED"}  # MLflow's run status; FINISHED otherwise
SEARCH_LIMIT = 50_000  # MLflow's own cap on one search
log = logging.getLogger("hiertune")


class SweepRecorder:
    """The sweep's MLflow bookkeeping, usable with or without a Tune run.

    A driver can be killed between any two of its writes, so every write is safe to repeat: a
    run is looked up by its tags before one is created, an epoch already logged to a run is not
    logged again, and `reconcile` makes MLflow agree with the sweep's final trial list."""

    def __init__(self, place: SweepPlace):
        self.place = place
        self.sweep = place.name
        self.state_path = place.dir / "mlflow_runs.json"
        self.state = self._load()
        self._active: dict[str, str] = {}  # trials seen by this process
        self._logged: dict[str, int] = {}  # run → the last step logged to it
        parent = self.state.get("parent")
        uri = place.mlflow_uri
        if parent is not None and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            raise self._elsewhere(parent)  # before the client, which would create the file
        if (db := sqlite_path(uri)) is not None:
            check_writable(db, "MLflow store", folder=False)
        try:
            self.client = open_client(uri)
        except ImportError as exc:  # a database store whose driver is not installed
            raise UserError(f"MLflow store {redact_uri(uri)}: its database driver is not installed "
                            f"({redact(first_line(exc))}); install it or use sqlite:///PATH") from None
        except MlflowException as exc:  # an unreachable server, an unsupported store (file://)
            raise _refused(uri, exc) from None
        tags = {NOTE_TAG: EXPERIMENT_NOTE.format(sweep=self.sweep),
                # MLflow 3's UI opens an experiment of this kind on its runs table, not its GenAI traces.
                "mlflow.experimentKind": "custom_model_development"}
        try:
            experiment = self.client.get_experiment_by_name(self.sweep)
            if parent is not None and (experiment is None or not self.client.search_runs(
                    [experiment.experiment_id], f"attributes.run_id = '{parent}'")):
                raise self._elsewhere(parent)
            if experiment is None:
                self.experiment_id = self.client.create_experiment(self.sweep, place.artifact_location(), tags=tags)
            else:  # a sweep logged before these tags existed gets them when it is resumed or exported
                self.experiment_id = experiment.experiment_id
                for key, value in tags.items():
                    if key not in experiment.tags:
                        self.client.set_experiment_tag(self.experiment_id, key, value)
        except MlflowException as exc:  # an unreachable or refusing server: its message, never a credential
            raise _refused(uri, exc) from None

    def _elsewhere(self, parent: str) -> UserError:
        """The sweep logged to another store (another machine's SQLite, another server)."""
        return UserError(f"MLflow store {redact_uri(self.place.mlflow_uri)} does not hold sweep "
                         f"{self.sweep!r} (run {parent}); pass --mlflow-uri of the store it logged to")

    @property
    def parent(self) -> str | None:
        """The sweep's parent run (None before start_parent)."""
        return self.state.get("parent")

    def started_trials(self) -> set[str]:
        """Trials that have a run: Tune started them (the callback writes the state as it goes)."""
        return set(self._load().get("trials", {}))

    def start_parent(self, params: dict, tags: dict) -> str:
        run_id = self.state.get("parent") or self._find(f"tags.`{ROLE_TAG}` = 'sweep'")
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=self.sweep, tags={
                "hiertune.sweep": self.sweep, ROLE_TAG: "sweep", NOTE_TAG: PARENT_NOTE, **tags}).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.log_params(run_id, params)
        self.state["parent"] = run_id
        self._save()
        return run_id

    def trial_run(self, trial_id: str, name: str, config: dict, tags: dict) -> str:
        if trial_id in self._active:
            return self._active[trial_id]
        run_id = self.state["trials"].get(trial_id) or self._find(f"tags.`hiertune.trial_id` = '{trial_id}'")
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags={
                PARENT_TAG: self.parent, "hiertune.sweep": self.sweep, "hiertune.trial_id": trial_id,
                "hiertune.status": "running", **tags}).info.run_id
        else:  # a resumed or restarted trial keeps its run, and what it logged
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "hiertune.status", "running")
            history = self.client.get_metric_history(run_id, "epoch")
            self._logged[run_id] = max((m.step for m in history), default=0)
        self.log_params(run_id, config)
        self.state["trials"][trial_id] = run_id
        self._active[trial_id] = run_id
        self._save()
        return run_id

    def log_metrics(self, run_id: str, metrics: dict, step: int) -> None:
        # A trial resumed after its driver was killed may replay an epoch it had already reported
        # (its checkpoint was written but not yet recorded by Ray); it is the same epoch, once.
        if step <= self._logged.get(run_id, -1):
            return
        batch = [Metric(k, float(v), 0, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(run_id, metrics=batch, synchronous=True)
        self._logged[run_id] = step

    def finish_trial(self, trial_id: str, status: str, reason: str | None = None) -> None:
        self._finish(self.state["trials"][trial_id], status, reason)

    def reconcile(self, trials: list[TrialRecord]) -> None:
        """Make the sweep's MLflow runs agree with its final trial list. A killed driver leaves
        runs RUNNING whose trials Ray has since finished, or interrupted; and a trial that Ray
        had not yet recorded when its driver died is gone for good (Ray samples its
        replacement under a new id), so its run is deleted rather than left behind."""
        by_id = {t.trial_id: t for t in trials}
        runs = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.parent}'",
                                       max_results=SEARCH_LIMIT)
        lost = []
        for run in runs:
            trial = by_id.get(run.data.tags.get("hiertune.trial_id"))
            if trial is None:
                self.client.delete_run(run.info.run_id)
                lost.append(run.data.tags.get("hiertune.trial_id"))
            elif run.info.status == "RUNNING" or run.data.tags.get("hiertune.status") != trial.status:
                self._finish(run.info.run_id, trial.status, trial.error)
        if lost:
            log.warning("deleted the MLflow run(s) of %d trial(s) lost with a killed driver: %s", len(lost),
                        ", ".join(map(str, lost)))
        self._save(drop=lost)

    def _finish(self, run_id: str, status: str, reason: str | None) -> None:
        tags = [RunTag("hiertune.status", status)] + ([RunTag("hiertune.error", reason[:5000])] if reason else [])
        self.client.log_batch(run_id, tags=tags, synchronous=True)
        self.client.set_terminated(run_id, RUN_STATUS.get(status, "FINISHED"))

    def set_tags(self, run_id: str, tags: dict) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, redact_param(k, v)) for k, v in tags.items()], synchronous=True)

    def _find(self, filter_string: str) -> str | None:
        """A run created by a driver that was killed before it saved the run's id."""
        runs = self.client.search_runs([self.experiment_id], filter_string, max_results=1)
        return runs[0].info.run_id if runs else None

    def log_params(self, run_id: str, params: dict) -> None:
        """Params of a run that has none yet: they are logged with the run's creation, and a run
        reopened without them lost its driver in between. (Logging them again would fail if
        `--set` changed one on resume.)"""
        if self.client.get_run(run_id).data.params:
            return
        items = [Param(k, redact_param(k, v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            self.client.log_batch(run_id, params=items[i:i + 100], synchronous=True)

    def _load(self) -> dict:
        if not self.state_path.exists():
            return {"trials": {}}
        state = read_json(self.state_path)
        if not isinstance(state, dict) or not isinstance(state.get("trials"), dict):
            raise UserError(f"{self.state_path}: not a trial → MLflow run map (no 'trials')")
        return state

    def _save(self, drop: Collection[str] = ()) -> None:
        # Merge with what is on disk: an interrupted driver still winding down may have
        # written since this one read it, and no trial's run may be forgotten.
        disk = self._load()
        trials = {k: v for k, v in {**disk["trials"], **self.state["trials"]}.items() if k not in drop}
        self.state = {**disk, **self.state, "trials": trials}
        with atomic_file(self.state_path) as tmp:
            tmp.write_text(json.dumps(self.state, indent=1))
        self.place.publish(self.state_path)


class MlflowSweepCallback(tune.Callback):
    """Feeds a SweepRecorder from Tune's events, in the driver.

    Ray pickles the callback with the tuner and hands the unpickled copy back on `--resume`, so
    it carries only where to write; the recorder (and its MLflow client) is rebuilt on first use
    and reads the trial → run map from the sweep folder."""

    posthoc: tuple[str, ...] = ()  # a callback pickled by a sweep from before it had this

    def __init__(self, place: SweepPlace, family: str, max_t: int, posthoc: Collection[str] = ()):
        self.place, self.family, self.max_t = place, family, max_t
        self.posthoc = tuple(posthoc)  # chosen after the forward pass: metrics of a point, not params
        self._recorder: SweepRecorder | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_recorder": None}

    @property
    def recorder(self) -> SweepRecorder:
        if self._recorder is None:
            self._recorder = SweepRecorder(self.place)
        return self._recorder

    def _run(self, trial) -> str:
        config = trial.config
        # What was sampled or fixed; the trial's number is in the run's name.
        params = {k: v for k, v in config.items() if k not in self.posthoc and k != "trial_number"}
        name = f"{trial_name(config.get('trial_number'), trial.trial_id)} ({self.family}, {trial.trial_id})"
        return self.recorder.trial_run(trial.trial_id, name, params, {"hiertune.family": self.family})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if FAILURE_KEY in result:  # no metrics: the reason is recorded when the error arrives
            return
        metrics = EpochMetrics.from_flat(result)
        # `point_*`, the config's own thresholds, mean something only when they were sampled
        # (otherwise seen/unseen/tau_* are the trial's recommended point).
        self.recorder.log_metrics(self._run(trial), {k: v for k, v in metrics.flat().items()
                                                     if not (self.posthoc and k.startswith(POINT))}, metrics.epoch)

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = TrialOutcome.of_trial(trial, self.max_t)
        self._curves(trial)
        if outcome.last is not None:
            self.recorder.set_tags(self._run(trial), {"hiertune.recommended.score": outcome.last.recommended.score})
        # A stopped trial is no error: hiertune.status says the scheduler ended it.
        self.recorder.finish_trial(trial.trial_id, outcome.status)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._curves(trial)
        self.recorder.finish_trial(trial.trial_id, "failed", TrialOutcome.of_trial(trial, self.max_t, failed=True).failure)

    def _curves(self, trial) -> None:
        try:
            history = read_history(checkpoint_uri(trial.checkpoint) if trial.checkpoint else None)
        except UserError as exc:  # a damaged checkpoint costs the plot, never the sweep
            log.warning("no learning curves for %s: %s", trial, exc)
            return
        if history:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "learning_curves.png"
                plot_learning_curves(history, path, f"{self.place.name} / {trial}")
                self.recorder.client.log_artifact(self._run(trial), str(path))


def _refused(uri: str, exc: Exception) -> UserError:
    """A store that failed to answer, as one line: its message, never a credential."""
    return UserError(f"MLflow store {redact_uri(uri)}: {redact(' '.join(str(exc).split()))[:300]}")
