"""Two sweeps writing to one MLflow store at once both complete with all their runs."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from faults.harness import children, fault_space, last_json, mlflow_runs
from hiertune.sweep import mlstore
from hiertune.sweep.state import load_trials

pytestmark = pytest.mark.slow


def test_two_sweeps_started_together_on_a_new_sqlite_store_both_complete(small_data, tmp_path, start_sweep):
    # Both find no store and create its schema at the same moment: the race a lock must settle.
    space = fault_space(tmp_path / "space.yaml", small_data, samples=2, epochs=1)
    storage = tmp_path / "sweeps"
    sweeps = [start_sweep(space, storage, name) for name in ("left", "right")]
    for sweep in sweeps:
        assert sweep.wait() == 0, sweep.err[-3000:]
    for sweep in sweeps:
        assert last_json(sweep.out)["trials"]["completed"] == 2
        _, runs = mlflow_runs(storage, sweep.name)
        assert len(runs) == 1 + 2 and all(r.info.status == "FINISHED" for r in runs)
        assert set(children(runs)) == {t.trial_id for t in load_trials(sweep.dir)}


class FlakyStore:
    """Finds the database locked `locked` times, then succeeds."""

    def __init__(self, locked: int, message: str = "(sqlite3.OperationalError) database is locked"):
        self.locked, self.message, self.calls = locked, message, 0

    def log_batch(self, run_id: str) -> str:
        self.calls += 1
        if self.calls <= self.locked:
            raise MlflowException(self.message)
        return run_id


def test_a_locked_database_is_retried_and_other_errors_are_not(monkeypatch):
    monkeypatch.setattr(mlstore, "FIRST_WAIT_S", 0.0)
    store = FlakyStore(locked=3)
    assert mlstore.RetryOnLocked(store).log_batch("r1") == "r1" and store.calls == 4
    store = FlakyStore(locked=mlstore.RETRIES)
    with pytest.raises(MlflowException, match="database is locked"):
        mlstore.RetryOnLocked(store).log_batch("r1")
    assert store.calls == mlstore.RETRIES
    store = FlakyStore(locked=1, message="RESOURCE_DOES_NOT_EXIST: run r1")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        mlstore.RetryOnLocked(store).log_batch("r1")
    assert store.calls == 1
