"""Trials that raise, diverge, run out of memory or lose their worker: each is recorded with its
reason, retried only when a retry can help, and never takes the sweep down."""

from __future__ import annotations

import os

import pytest

from faults.harness import (
    FaultSweep,
    children,
    failures,
    history,
    last_json,
    mlflow_runs,
    ray_statuses,
    steps,
    trial_dirs,
)
from hiertune.sweep.state import load_trials

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outcome(fault_sweep: FaultSweep):
    assert fault_sweep.code == 0, fault_sweep.sweep.err[-3000:]
    dirs = trial_dirs(fault_sweep.tune_dir)
    records = {t.trial_id: t for t in load_trials(fault_sweep.sweep.dir)}
    client, runs = mlflow_runs(fault_sweep.sweep.storage, fault_sweep.sweep.name)
    by_trial = children(runs)
    statuses = ray_statuses(fault_sweep.tune_dir)

    def trial(number: int):
        trial_id = dirs[number].name.removeprefix("trial_")
        return dirs[number], records[trial_id], by_trial[trial_id], statuses[trial_id]

    return client, runs, trial


def test_the_sweep_finishes_and_keeps_every_trial(fault_sweep, outcome):
    _, runs, _ = outcome
    summary = last_json(fault_sweep.sweep.out)
    assert summary["trials"] == {"completed": 2, "stopped": 0, "failed": 2, "interrupted": 0}
    assert summary["front"]  # the trials that completed make a front
    assert len(runs) == 1 + 4 and all(r.info.status != "RUNNING" for r in runs)


def test_a_transient_failure_is_retried_from_the_last_checkpoint(outcome):
    client, _, trial = outcome
    folder, record, run, ray_status = trial(0)
    assert failures(folder) == 1  # failed once, then went on
    assert [(h["epoch"], h["attempt"]) for h in history(folder)] == [(1, 1), (2, 2)]
    assert (record.status, record.epochs, record.error) == ("completed", 2, None)
    assert ray_status == "TERMINATED"
    assert run.info.status == "FINISHED" and run.data.tags["hiertune.status"] == "completed"
    assert steps(client, run, "epoch") == [1, 2]  # its one run, each epoch logged once


@pytest.mark.parametrize(("number", "reason", "epochs"), [
    (1, "non-finite training loss (nan) in epoch 2", 1),
    (2, "out of memory: CUDA out of memory: injected fault oom@0 (test setting)", 0),
])
def test_a_final_failure_is_recorded_with_its_reason_and_not_retried(outcome, number, reason, epochs):
    client, _, trial = outcome
    folder, record, run, ray_status = trial(number)
    assert failures(folder) == 1  # max_failures is 1, yet no retry
    assert (record.status, record.epochs, record.error) == ("failed", epochs, reason)
    assert ray_status == "ERROR"
    assert run.info.status == "FAILED"
    assert run.data.tags["hiertune.status"] == "failed" and run.data.tags["hiertune.error"] == reason
    assert steps(client, run, "epoch") == list(range(1, epochs + 1))


def test_a_killed_worker_restarts_its_trial_from_the_last_checkpoint(fault_sweep, outcome):
    client, _, trial = outcome
    folder, record, run, ray_status = trial(3)
    with pytest.raises(ProcessLookupError):
        os.kill(fault_sweep.killed_pid, 0)
    assert failures(folder) == 1 and "worker process has died" in (folder / "error.txt").read_text()
    # Epoch 1 is not run again: the second attempt starts at the checkpoint of epoch 1.
    assert [(h["epoch"], h["attempt"]) for h in history(folder)] == [(1, 1), (2, 2)]
    assert (record.status, record.epochs) == ("completed", 2) and ray_status == "TERMINATED"
    assert run.info.status == "FINISHED" and run.data.tags["hiertune.status"] == "completed"
    assert steps(client, run, "epoch") == [1, 2]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "attempt")] == [1, 2]
