"""MLflow records of a sweep: one experiment per sweep, a parent run, a child run per trial.

Ray's MLflowLoggerCallback neither nests runs nor keeps a single writer, so this Tune callback
logs through MlflowClient from the driver: nested child runs, and one process touching the
store (which also keeps SQLite free of "database is locked"). Which MLflow run belongs to which
trial is kept in the sweep folder, so `--resume` logs into the same runs and never twice.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from hiertune.errors import UserError
from hiertune.fsutil import atomic_file
from hiertune.plots import plot_learning_curves
from hiertune.storage import checkpoint_uri, join, read_bytes

if TYPE_CHECKING:
    from hiertune.sweep import SweepPlace

PARENT_TAG = "mlflow.parentRunId"
SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access_key|api_key)", re.I)


def redact(key: str, value) -> str:
    """Params and tags never carry secrets: secret-looking keys are masked, and credentials
    embedded in URLs (s3://KEY:SECRET@bucket, http://user:pass@host) are removed."""
    if SECRET_KEY.search(key):
        return "***"
    text = str(value)
    if "@" in text and "://" in text:
        parts = urlsplit(text)
        if parts.username or parts.password:
            host = parts.hostname + (f":{parts.port}" if parts.port else "")
            text = urlunsplit(parts._replace(netloc=host))
    return text[:6000]  # MLflow's param value limit


class SweepRecorder:
    """The sweep's MLflow bookkeeping, usable with or without a Tune run."""

    def __init__(self, place: SweepPlace):
        self.place = place
        self.sweep = place.name
        self.state_path = place.dir / "mlflow_runs.json"
        self.state = self._load()
        self._active: dict[str, str] = {}  # trials seen by this process
        parent = self.state.get("parent")
        uri = place.mlflow_uri
        if parent is not None and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            raise self._elsewhere(parent)  # before MlflowClient, which would create the file
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(self.sweep)
        if parent is not None and (experiment is None or not self.client.search_runs(
                [experiment.experiment_id], f"attributes.run_id = '{parent}'")):
            raise self._elsewhere(parent)
        self.experiment_id = (experiment.experiment_id if experiment else
                              self.client.create_experiment(self.sweep, artifact_location=place.artifact_location()))

    def _elsewhere(self, parent: str) -> UserError:
        """The sweep logged to another store (another machine's SQLite, another server)."""
        return UserError(f"MLflow store {redact('mlflow_uri', self.place.mlflow_uri)} does not hold sweep "
                         f"{self.sweep!r} (run {parent}); pass --mlflow-uri of the store it logged to")

    def start_parent(self, params: dict, tags: dict) -> str:
        if self.state.get("parent") is None:
            run = self.client.create_run(self.experiment_id, run_name=self.sweep,
                                         tags={"hiertune.sweep": self.sweep, **tags})
            self.state["parent"] = run.info.run_id
            self._save()
            self.log_params(run.info.run_id, params)
        else:
            self.client.update_run(self.state["parent"], status="RUNNING")
        return self.state["parent"]

    def trial_run(self, trial_id: str, name: str, config: dict, tags: dict) -> str:
        if trial_id in self._active:
            return self._active[trial_id]
        run_id = self.state["trials"].get(trial_id)
        if run_id is not None:  # a resumed or restarted trial keeps its run
            self.client.update_run(run_id, status="RUNNING")
            self._active[trial_id] = run_id
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            PARENT_TAG: self.state["parent"], "hiertune.sweep": self.sweep, "hiertune.trial_id": trial_id,
            "hiertune.status": "running", **tags})
        self.state["trials"][trial_id] = run.info.run_id
        self._active[trial_id] = run.info.run_id
        self._save()
        self.log_params(run.info.run_id, config)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict, step: int) -> None:
        batch = [Metric(k, float(v), 0, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(run_id, metrics=batch, synchronous=True)

    def finish_trial(self, trial_id: str, status: str, reason: str | None = None) -> None:
        run_id = self.state["trials"][trial_id]
        tags = [RunTag("hiertune.status", status)] + ([RunTag("hiertune.error", reason[:5000])] if reason else [])
        self.client.log_batch(run_id, tags=tags, synchronous=True)
        self.client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED")

    def log_params(self, run_id: str, params: dict) -> None:
        items = [Param(k, redact(k, v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            self.client.log_batch(run_id, params=items[i:i + 100], synchronous=True)

    def _load(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {"trials": {}}

    def _save(self) -> None:
        # Merge with what is on disk: an interrupted driver still winding down may have
        # written since this one read it, and no trial's run may be forgotten.
        disk = self._load()
        self.state = {**disk, **self.state, "trials": {**disk["trials"], **self.state["trials"]}}
        with atomic_file(self.state_path) as tmp:
            tmp.write_text(json.dumps(self.state, indent=1))
        self.place.publish(self.state_path)


class MlflowSweepCallback(tune.Callback):
    """Feeds a SweepRecorder from Tune's events, in the driver.

    Ray pickles the callback with the tuner and hands the unpickled copy back on `--resume`, so
    it carries only where to write; the recorder (and its MLflow client) is rebuilt on first use
    and reads the trial → run map from the sweep folder."""

    def __init__(self, place: SweepPlace, family: str, max_t: int):
        self.place, self.family, self.max_t = place, family, max_t
        self._recorder: SweepRecorder | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_recorder": None}

    @property
    def recorder(self) -> SweepRecorder:
        if self._recorder is None:
            self._recorder = SweepRecorder(self.place)
        return self._recorder

    def _run(self, trial) -> str:
        return self.recorder.trial_run(trial.trial_id, str(trial), trial.config, {"hiertune.family": self.family})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self.recorder.log_metrics(self._run(trial), result, step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        stopped = last.get("training_iteration", 0) < self.max_t
        self._curves(trial)
        self.recorder.finish_trial(trial.trial_id, "stopped" if stopped else "completed",
                                   "stopped early by ASHA" if stopped else None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._curves(trial)
        self.recorder.finish_trial(trial.trial_id, "failed", _error_line(trial))

    def _curves(self, trial) -> None:
        history = trial_history(checkpoint_uri(trial.checkpoint) if trial.checkpoint else None)
        if history:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "learning_curves.png"
                plot_learning_curves(history, path, f"{self.place.name} / {trial}")
                self.recorder.client.log_artifact(self._run(trial), str(path))


def trial_history(checkpoint: str | None) -> list[dict]:
    """Every epoch a trial reported, from its latest checkpoint (complete across resumes)."""
    from hiertune.train import Checkpoint

    if checkpoint is None:
        return []
    try:
        return json.loads(read_bytes(join(checkpoint, Checkpoint.HISTORY)))
    except (OSError, ValueError):
        return []


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed"
