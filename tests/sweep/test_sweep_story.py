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

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, last_json, space_file

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
def test_trials_shorter_than_max_t_finish_and_the_sweep_tells_what_happened(finished_sweep):
    # epochs=1 < max_t=3: every trial runs all its epochs, and none was stopped by ASHA.
    storage, summary = finished_sweep.storage, finished_sweep.summary
    assert summary["trials"] == {"completed": 3, "stopped": 0, "failed": 0, "interrupted": 0}
    assert [t.status for t in load_trials(storage / "short")] == ["completed"] * 3

    # Optuna's persisted study: every trial COMPLETE (was PRUNED), openable by anyone.
    study = optuna.load_study(study_name="short", storage=f"sqlite:///{storage / 'short' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all({"seen", "unseen"} <= set(t.user_attrs) for t in study.trials)
    importance = summary["importance"]["objectives"]
    assert set(importance) == {"hypervolume", "seen", "unseen"}
    assert set(importance["hypervolume"]) == {"lr", "dropout", "outlier_fraction"}
    assert sum(importance["seen"].values()) == pytest.approx(1.0)

    # MLflow: params are what was sampled or fixed; the post-hoc choice is the recommended
    # point's metrics and tag; no Ray bookkeeping; named runs; descriptions. (The fixture's
    # export-best step added its runs under the parent too; tests/export checks those.)
    client = MlflowClient(finished_sweep.mlflow_uri)
    experiment = client.get_experiment_by_name("short")
    assert "one nested run per trial" in experiment.tags["mlflow.note.content"]
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and "hiertune.export" not in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 3
    for run in children:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["hiertune.status"] == "completed" and "hiertune.error" not in tags
        assert re.fullmatch(r"trial-0[0-2] \(cnn, \w+\)", tags["mlflow.runName"])
        assert {"lr", "dropout", "outlier_fraction", "epochs", "family"} <= set(params)
        assert not {"novelty_score", "tau_super", "tau_sub", "trial_number"} & set(params)
        assert {"seen", "unseen", "tau_super", "tau_sub", "hypervolume"} <= set(metrics)
        assert not {"lr", "pid", "timestamp", "time_total_s", "training_iteration", "point_seen"} & set(metrics)
        assert tags["hiertune.recommended.score"] in list_scores()
    assert len({r.data.tags["mlflow.runName"] for r in children}) == 3
    best = summary["recommended"]
    # The post-hoc grid is the space's: τ_super within its declared [0.5, 1.0], only its two scores,
    # on the front, in pareto.csv, on every trial's MLflow run and on the parent run.
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
    assert parent.data.tags["hiertune.best.trial_id"] == best["trial_id"]
    assert "export-best retrains" in parent.data.tags["mlflow.note.content"]
    assert {"pareto.html", "importance.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

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
        assert len(detail["trials"]) == 3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_optuna_is_told_a_trial_that_ran_its_own_epochs_completed(small_data, tmp_path):
    space = load_space(space_file(tmp_path, small_data, samples=2, max_t=4)).with_overrides({"epochs": 1})
    searcher = FidelityAwareOptunaSearch(space, tmp_path, "s")
    configs = [searcher.suggest(f"t{i}") for i in range(2)]
    assert [c["epochs"] for c in configs] == [1, 1]
    searcher.on_trial_complete("t0", {"hypervolume": 0.5, "seen": 0.4, "unseen": 0.6, "training_iteration": 1})
    searcher.on_trial_complete("t1", None, error=True)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")  # persisted
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert study.trials[0].value == 0.5 and study.trials[0].user_attrs == {"seen": 0.4, "unseen": 0.6}
