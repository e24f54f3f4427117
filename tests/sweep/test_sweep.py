"""Real sweeps on synthetic data: Ray Tune + Optuna + ASHA + MLflow, the front, resume. (A sweep logging
to an MLflow server over HTTP: tests/test_secrets.py, which runs one against a server anyway.)"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import last_json, space_file
from hiertune.novelty.metrics import pareto_front
from hiertune.sweep.space import load_space
from hiertune.sweep.front import compute_front, front_points
from hiertune.sweep.search import FidelityAwareOptunaSearch
from hiertune.sweep.state import load_trials


@pytest.mark.slow
def test_the_front_is_reproducible_from_the_stored_results_and_pareto_only_reads(cli, finished_sweep):
    """The shared sweep's front: non-empty, non-dominated, what pareto.csv holds, and what the
    stored per-trial results give again; `pareto` redraws it without touching the MLflow store."""
    summary, sweep_dir = finished_sweep.summary, finished_sweep.dir
    points = front_points(load_trials(sweep_dir))
    front = summary["front"]
    assert front and len(points) > len(front)
    all_pts = np.stack([points.seen, points.unseen], 1)
    for p in front:
        dominated = (all_pts[:, 0] >= p["seen"]) & (all_pts[:, 1] >= p["unseen"]) & (
            (all_pts[:, 0] > p["seen"]) | (all_pts[:, 1] > p["unseen"]))
        assert not dominated.any()
    assert json.loads(json.dumps([p.row() for p in compute_front(points.at(range(len(points))))])) == front
    with (sweep_dir / "pareto.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["seen"]), float(r["unseen"])) for r in rows] == [(p["seen"], p["unseen"]) for p in front]
    assert len(pareto_front(np.array([[p["seen"], p["unseen"]] for p in front]))) == len(front)
    store = finished_sweep.storage / "mlflow.db"
    before = store.stat().st_mtime_ns, store.read_bytes()
    storage = str(finished_sweep.storage)
    again = cli("pareto", "short", "--storage", storage, "--json")
    assert again.code == 0 and last_json(again.out)["front"] == front
    # --groups: the per-group table, and the --pick point with its groups and every score's AUROCs.
    grouped = cli("pareto", "short", "--storage", storage, "--groups")
    assert grouped.code == 0 and "seen_shifted_acc" in grouped.out and "auroc novel_sub" in grouped.out
    picked = last_json(cli("pareto", "short", "--storage", storage, "--groups", "--json").out)["picked"]
    assert 0.0 <= picked["seen_shifted_acc"] <= 1.0 and "auroc_novel_super.msp" in picked
    assert (store.stat().st_mtime_ns, store.read_bytes()) == before


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_losing_or_duplicating_trials(cli, small_data, tmp_path):
    """SIGINT the process group (Ctrl+C) once a trial has finished: exit 130 and one line saying what
    finished and the command that resumes; that command (--name and --storage only: the space,
    its --set and the data come from sweep.json) runs every trial, each logged exactly once."""
    space = space_file(tmp_path, small_data, samples=4, max_t=3, grace=2)
    storage = tmp_path / "sweeps"
    env = {**os.environ, "HIERTUNE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "hiertune", "sweep", str(space), "--name", "r", "--storage", str(storage),
           "--set", "epochs=2", "--budget", "10m"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    runs_file = storage / "r" / "mlflow_runs.json"
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    deadline = time.time() + 240
    live = None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        if live is None and (storage / "r" / "trials.live.json").exists():
            # While it runs, `pareto` draws the front of what has reported so far.
            live = cli("pareto", "r", "--storage", str(storage), "--json")
            assert not (storage / "r" / "trials.json").exists()
        if runs_file.exists():
            experiment = client.get_experiment_by_name("r")
            done = client.search_runs([experiment.experiment_id], "tags.`hiertune.status` = 'completed'")
            if done:
                break
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    assert live is not None and live.code == 0 and last_json(live.out)["front"], live and live.err[-2000:]
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-3000:]
    *_, line = err.strip().splitlines()
    assert line.startswith("hiertune: sweep r interrupted: ") and " trial(s) finished" in line
    resume = line.split("resume with: ")[1].split()
    assert resume[-6:] == ["sweep", "--name", "r", "--storage", str(storage), "--resume"]
    # Ray's hint (Tuner.restore), its warnings and the workers' tracebacks stay in the sweep's log.
    assert "Tuner.restore" not in err and "Traceback" not in err and "WARNING" not in err
    assert "Tuner.restore" in (storage / "r" / "sweep.log").read_text()
    before = json.loads(runs_file.read_text())["trials"]
    assert len(before) >= 1
    # Ctrl+C ends cleanly: what had not finished is 'interrupted' (MLflow: KILLED), not left RUNNING.
    statuses = {t.trial_id: t.status for t in load_trials(storage / "r")}
    assert set(statuses.values()) <= {"completed", "interrupted"} and "completed" in statuses.values()
    assert sum(s == "completed" for s in statuses.values()) < 4  # work left for --resume
    experiment = client.get_experiment_by_name("r")
    child_runs = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(child_runs) == len(before)
    for run in child_runs:
        trial_id = run.data.tags["hiertune.trial_id"]
        assert run.info.status == {"completed": "FINISHED", "interrupted": "KILLED"}[statuses[trial_id]]

    # Resumed by a new driver, in this process, with the printed command (and --json).
    resumed = cli(*resume[resume.index("sweep"):], "--json")
    assert resumed.code == 0, resumed.err[-3000:]
    summary = last_json(resumed.out)
    assert sum(summary["trials"].values()) == 4 and summary["ended"] == "finished" and summary["budget"] == 600
    after = json.loads(runs_file.read_text())["trials"]
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())
    records = load_trials(storage / "r")
    assert sorted(t.name for t in records) == [f"trial-{i:02d}" for i in range(4)]
    assert all(t.config["epochs"] == 2 and t.epochs == 2 for t in records)  # --set epochs=2, recorded and kept
    experiment = client.get_experiment_by_name("r")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    assert sorted(r.data.tags["hiertune.trial_id"] for r in children) == sorted(after)
    assert all(r.info.status == "FINISHED" for r in children)


@pytest.mark.slow
def test_optuna_learns_stopped_trials_as_pruned_and_finished_ones_as_complete(small_data, tmp_path):
    space = load_space(space_file(tmp_path, small_data, samples=3, max_t=4))
    searcher = FidelityAwareOptunaSearch(space)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert all(c["family"] == "cnn" and 1e-4 <= c["lr"] <= 3e-2 and "novelty_score" in c for c in configs)
    # A trial resumed from its epoch-1 checkpoint reports epoch 2 again: Optuna keeps the first
    # value, and the user's console gets no warning per replayed epoch.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step, value in ((1, 0.5), (2, 0.6), (2, 0.1)):
            searcher.on_trial_result("t0", {"hypervolume": value, "training_iteration": step})
    searcher.on_trial_complete("t0", {"hypervolume": 0.7, "training_iteration": 4})
    searcher.on_trial_complete("t1", {"hypervolume": 0.4, "training_iteration": 1})  # stopped by ASHA
    searcher.on_trial_complete("t2", None, error=True)
    trials = searcher._ot_study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert trials[0].value == 0.7 and trials[0].intermediate_values == {1: 0.5, 2: 0.6}
    assert trials[1].intermediate_values == {1: 0.4}
