"""What a user sees of a real sweep: statuses, MLflow runs, the persisted Optuna study and its
importance, the recommended point everywhere, and next steps that work as printed."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import epoch, free_port, last_json, space_file
from hiertune.training import checkpoint as ckpt
from hiertune.training.checkpoint import read_history

from hiertune.novelty.registry import list_scores
from hiertune.sweep.space import load_space
from hiertune.sweep.search import FidelityAwareOptunaSearch
from hiertune.sweep.state import load_trials


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{url} did not answer")
            time.sleep(0.5)


@pytest.mark.slow
def test_each_trial_ends_as_its_epochs_and_the_scheduler_say(finished_sweep):
    """A trial that ran all its own epochs completed, whether or not that reached max_t (the
    sampled 1 < max_t=3); one ASHA ended earlier was stopped: the sweep's summary, trials.json,
    Ray's per-trial results, the checkpoints' histories and Optuna agree."""
    storage, summary = finished_sweep.storage, finished_sweep.summary
    trials = load_trials(storage / "short")
    assert [(t.status, t.epochs) for t in trials] == [
        ("completed" if t.epochs == t.config["epochs"] else "stopped", t.epochs) for t in trials]
    assert {t.config["epochs"] for t in trials if t.status == "completed"} == {1, 3}
    assert any(t.status == "stopped" for t in trials)  # ASHA stopped at least one trial early
    assert summary["trials"] == {"completed": sum(t.status == "completed" for t in trials),
                                 "stopped": sum(t.status == "stopped" for t in trials), "failed": 0, "interrupted": 0}
    for t in trials:  # the trainable in a real Tune session: one result and one history entry per epoch
        assert t.error is None and t.metrics["epoch"] == t.metrics["training_iteration"] == t.epochs >= 1
        reported = (storage / "short" / "tune" / f"trial_{t.trial_id}" / "result.json").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in reported] == list(range(1, t.epochs + 1))
        assert [h.epoch for h in read_history(t.checkpoint)] == list(range(1, t.epochs + 1))
        assert (Path(t.checkpoint) / ckpt.MODEL).is_file()

    # Optuna's persisted study: a completed trial COMPLETE, a stopped one PRUNED, openable by anyone.
    study = optuna.load_study(study_name="short", storage=f"sqlite:///{storage / 'short' / 'optuna.db'}")
    state = {"completed": optuna.trial.TrialState.COMPLETE, "stopped": optuna.trial.TrialState.PRUNED}
    assert [t.state for t in study.trials] == [state[r.status] for r in sorted(trials, key=lambda r: r.name)]
    assert all({"seen", "unseen"} <= set(t.user_attrs) for t in study.trials)
    importance = summary["importance"]["objectives"]
    assert set(importance) == {"hypervolume", "seen", "unseen"}
    assert set(importance["hypervolume"]) == {"epochs", "lr", "dropout", "outlier_fraction"}
    assert sum(importance["seen"].values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_mlflow_holds_a_parent_run_and_a_run_per_trial_as_the_sweep_ran_them(finished_sweep):
    """The sweep's MLflow layout, checked once: params are what was sampled or fixed, the post-hoc
    choice is the recommended point's metrics and tag, every epoch a step, the LR schedule as
    lr_now, no Ray bookkeeping, named runs, descriptions, artifacts. (The fixture's export-best
    step added its runs under the parent too; tests/export checks those.)"""
    by_id = {t.trial_id: t for t in load_trials(finished_sweep.dir)}
    client = MlflowClient(finished_sweep.mlflow_uri)
    experiment = client.get_experiment_by_name("short")
    assert "one nested run per trial" in experiment.tags["mlflow.note.content"]
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and "hiertune.export" not in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == len(by_id) == 6
    for run in children:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        trial = by_id[tags["hiertune.trial_id"]]
        assert tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert tags["hiertune.status"] == trial.status and "hiertune.error" not in tags
        assert tags["hiertune.family"] == "cnn" and tags["mlflow.runName"] == f"{trial.name} (cnn, {trial.trial_id})"
        assert re.fullmatch(r"trial-0[0-5]", trial.name)
        assert {"lr", "dropout", "outlier_fraction", "epochs", "family"} <= set(params)
        assert float(params["lr"]) == pytest.approx(trial.params["lr"])
        assert not {"novelty_score", "tau_super", "tau_sub", "trial_number"} & set(params)
        assert {"seen", "unseen", "tau_super", "tau_sub", "hypervolume", "lr_now"} <= set(metrics)
        assert not {"lr", "pid", "timestamp", "time_total_s", "training_iteration", "point_seen"} & set(metrics)
        assert tags["hiertune.recommended.score"] in list_scores()
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "hypervolume")]
        assert steps == list(range(1, trial.epochs + 1))
        schedule = client.get_metric_history(run.info.run_id, "lr_now")  # beside the `lr` param it starts from
        assert [m.step for m in schedule] == steps and all(0 <= m.value <= trial.params["lr"] for m in schedule)
        assert "learning_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len({r.data.tags["mlflow.runName"] for r in children}) == 6
    best = finished_sweep.summary["recommended"]
    assert parent.info.status == "FINISHED"
    # The post-hoc grid is the space's: τ_super within its declared [0.5, 1.0], only its two scores,
    # on the front, in pareto.csv, on every trial's MLflow run and on the parent run.
    summary = finished_sweep.summary
    front = summary["front"]
    assert front and all(0.5 <= p["tau_super"] <= 1.0 and p["score"] in ("msp", "energy") for p in front)
    with open(summary["pareto_csv"], newline="") as f:
        assert all(0.5 <= float(row["tau_super"]) <= 1.0 for row in csv.DictReader(f))
    assert all(0.5 <= run.data.metrics["tau_super"] <= 1.0 for run in children)
    assert all(set(run.data.tags["hiertune.recommended.score"].split()) <= {"msp", "energy"} for run in children)
    assert 0.5 <= parent.data.metrics["best_tau_super"] <= 1.0
    assert parent.data.params["search.tau_super"] == "float [0.5, 1.0] (post-hoc)"
    assert parent.data.metrics["best_seen"] == pytest.approx(best["seen"])
    assert parent.data.metrics["best_unseen"] == pytest.approx(best["unseen"])
    assert 0.0 <= parent.data.metrics["best_seen_shifted_acc"] <= 1.0
    assert parent.data.tags["hiertune.best.trial_id"] == best["trial_id"]
    assert parent.data.tags["hiertune.seen_shifted"].startswith("corruptions of the seen validation images")
    assert parent.data.params["search.lr"] == "float log [0.0001, 0.03]"
    assert "export-best retrains" in parent.data.tags["mlflow.note.content"]
    assert {"pareto.csv", "pareto.png", "pareto.html", "trials.json", "learning_curves.png", "shifted_examples.png",
            "importance.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
def test_the_next_steps_work_as_printed(finished_sweep):
    best = finished_sweep.summary["recommended"]
    # The next steps, pasted: hiertune commands run in-process (by the fixture), the dashboard
    # as a server.
    ran = set()
    for args, run in finished_sweep.ran:
        assert run.code == 0, (args, run.err[-2000:])
        ran.add(args[0])
        if args[0] == "pareto":
            assert last_json(run.out)["recommended"] == best
        if args[0] == "export-best":
            exports = last_json(run.out)["exports"]
            assert exports[0]["trial"] == best["trial"]  # the default pick is the recommended point
    assert ran == {"pareto", "export-best", "ls"}
    (dashboard,) = [list(argv) for argv in finished_sweep.next_steps if argv[0].endswith("optuna-dashboard")]
    port = free_port()
    dashboard[dashboard.index("--port") + 1] = str(port)
    proc = subprocess.Popen([*dashboard, "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        studies = wait_for(f"http://127.0.0.1:{port}/api/studies", proc)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["short"]
        detail = wait_for(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", proc)
        assert len(detail["trials"]) == 6
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_optuna_is_told_a_trial_that_ran_its_own_epochs_completed(small_data, tmp_path):
    space = load_space(space_file(tmp_path, small_data, samples=2, max_t=4)).with_overrides({"epochs": 1})
    searcher = FidelityAwareOptunaSearch(space, tmp_path, "s")
    configs = [searcher.suggest(f"t{i}") for i in range(2)]
    assert [c["epochs"] for c in configs] == [1, 1]
    searcher.on_trial_complete("t0", {**epoch(1, 0.4, 0.6, 0.5).flat(), "training_iteration": 1})
    searcher.on_trial_complete("t1", None, error=True)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")  # persisted
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert study.trials[0].value == 0.5 and study.trials[0].user_attrs == {"seen": 0.4, "unseen": 0.6}
