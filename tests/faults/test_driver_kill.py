"""SIGKILL the sweep driver mid-run, as the OOM killer or a lost login node would, damage a
checkpoint the way a crash mid-write does, and `--resume`: finished trials are kept and not run
again, unfinished ones continue from their checkpoints, the damaged one fails with its file
named, and MLflow ends with one finished run per trial."""

from __future__ import annotations

import pytest

import json
import os
import signal

from faults.harness import (
    children,
    failures,
    fault_space,
    history,
    kill_session,
    last_json,
    mlflow_runs,
    ray_statuses,
    results,
    steps,
    trial_dirs,
    wait_for,
)
from hiertune.sweep.state import load_trials

pytestmark = pytest.mark.slow

# Trials 1 and 2 stop at their second epoch on their first attempt, so that when the driver is
# killed trial 0 has finished, trials 1 and 2 are mid-run with a checkpoint, and trial 3 waits.
PLAN = "1=stall@1;2=stall@1"


def test_a_killed_driver_resumes_without_losing_or_repeating_work(cli, small_data, tmp_path, start_sweep):
    space = fault_space(tmp_path / "space.yaml", small_data, samples=4, epochs=2, faults=PLAN)
    storage = tmp_path / "sweeps"
    first = start_sweep(space, storage, "k")
    tune_dir = first.dir / "tune"

    def killable() -> bool:
        dirs = trial_dirs(tune_dir)
        if not all(n in dirs and [r["epoch"] for r in results(dirs[n])] == [1] for n in (1, 2)):
            return False
        _, runs = mlflow_runs(storage, "k")
        done = [r for r in children(runs).values() if r.info.status == "FINISHED"]
        return [r.data.tags["hiertune.trial_id"] for r in done] == [dirs[0].name.removeprefix("trial_")]

    wait_for(killable, "trial 0 finished and trials 1 and 2 checkpointed", first)
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL
    kill_session(first.proc.pid)  # Ray's agents outlive a killed driver; a lost machine takes them too

    dirs = trial_dirs(tune_dir)
    ids = {n: d.name.removeprefix("trial_") for n, d in dirs.items()}
    client, runs = mlflow_runs(storage, "k")
    before = children(runs)
    assert {before[ids[n]].info.status for n in (1, 2)} == {"RUNNING"}  # what the killed driver left
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "RUNNING"
    results_before = {n: results(dirs[n]) for n in (0, 1)}
    # A run whose trial Ray never recorded: what a trial started after Ray's last state snapshot
    # leaves behind. Ray samples a replacement under a new id, so this run must not survive.
    lost = client.create_run(parent.info.experiment_id, tags={"mlflow.parentRunId": parent.info.run_id,
                                                              "hiertune.trial_id": "lost0000"}).info.run_id
    runs_file = first.dir / "mlflow_runs.json"
    run_map = json.loads(runs_file.read_text())
    run_map["trials"]["lost0000"] = lost
    runs_file.write_text(json.dumps(run_map))
    # The crash also truncated trial 2's checkpoint.
    for checkpoint in dirs[2].glob("checkpoint_*"):
        model = checkpoint / "model.safetensors"
        model.write_bytes(model.read_bytes()[:100])

    # A new driver, in this process.
    resumed = cli("sweep", str(space), "--name", "k", "--storage", str(storage), "--resume", "--json")
    assert resumed.code == 0, resumed.err[-3000:]
    summary = last_json(resumed.out)
    assert summary["trials"] == {"completed": 3, "stopped": 0, "failed": 1, "interrupted": 0}

    dirs = trial_dirs(tune_dir)
    ids = {n: d.name.removeprefix("trial_") for n, d in dirs.items()}
    records = {t.trial_id: t for t in load_trials(first.dir)}
    statuses = ray_statuses(tune_dir)
    client, runs = mlflow_runs(storage, "k")
    after = children(runs)
    assert len(runs) == 1 + 4 and set(after) == set(records) and len(records) == 4
    assert all(r.info.status != "RUNNING" for r in runs)
    assert all(after[k].info.run_id == run.info.run_id for k, run in before.items())  # each trial kept its run
    assert client.get_run(lost).info.lifecycle_stage == "deleted"
    assert "lost0000" not in json.loads(runs_file.read_text())["trials"]

    # Trial 0 had finished: not run again.
    assert results(dirs[0]) == results_before[0]
    assert [(h["epoch"], h["attempt"]) for h in history(dirs[0])] == [(1, 1), (2, 1)]
    # Trial 1 continued from its checkpoint: epoch 1 kept, epoch 2 run by the resumed attempt.
    assert results(dirs[1])[:1] == results_before[1]
    assert [(h["epoch"], h["attempt"]) for h in history(dirs[1])] == [(1, 1), (2, 2)]
    # Trial 3 had not started; it ran whole.
    assert [(h["epoch"], h["attempt"]) for h in history(dirs[3])] == [(1, 1), (2, 1)]
    for n in (0, 1, 3):
        record, run = records[ids[n]], after[ids[n]]
        assert (record.status, record.epochs) == ("completed", 2)
        assert statuses[record.trial_id] == "TERMINATED"
        assert run.info.status == "FINISHED" and run.data.tags["hiertune.status"] == "completed"
        assert steps(client, run, "epoch") == [1, 2]  # no epoch logged twice

    # Trial 2's damaged checkpoint fails it once, with the file named; no crash loop.
    damaged = max(dirs[2].glob("checkpoint_*")) / "model.safetensors"
    record, run = records[ids[2]], after[ids[2]]
    assert record.status == "failed" and record.error.startswith(f"{damaged}: unreadable or truncated checkpoint")
    assert failures(dirs[2]) == 1 and statuses[ids[2]] == "ERROR"
    assert run.info.status == "FAILED" and run.data.tags["hiertune.error"] == record.error
