"""hiertune.sweep.records: a trial's outcome decided once from Ray's results; a front point's row."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import epoch, front_point
from hiertune.sweep.records import FrontPoint, TrialOutcome, trial_name
from hiertune.training.faults import FAILURE_KEY


def result(iteration: int, **extra) -> dict:
    return {**epoch(max(1, iteration)).flat(), "training_iteration": iteration, **extra}


@pytest.mark.parametrize(("last", "config", "ended", "status", "epochs"), [
    (result(4, done=True), {"epochs": 4}, False, "completed", 4),
    (result(2, done=True), {"epochs": 4}, False, "stopped", 2),
    (result(2), {"epochs": 4}, False, "interrupted", 2),  # no `done`: the sweep stopped first
    (result(2), {"epochs": 4}, True, "stopped", 2),  # ended before a resume
    (result(4), {"epochs": 4}, False, "completed", 4),  # its last epoch, though Ray's state lacks `done`
    (result(3), {"epochs": 8}, False, "completed", 3),  # the scheduler's max_t (3) ends it
    ({FAILURE_KEY: "diverged", "training_iteration": 3}, {"epochs": 4}, True, "failed", 2),  # one extra report
])
def test_a_trials_status_and_epochs_are_decided_once(last, config, ended, status, epochs):
    outcome = TrialOutcome.read("abc", last, {**config, "trial_number": 7}, max_t=3 if config["epochs"] == 8 else 4,
                                ended=ended)
    assert (outcome.status, outcome.epochs, outcome.name) == (status, epochs, "trial-07")
    assert (outcome.last is None) == (FAILURE_KEY in last)


def test_a_failure_reason_is_the_trials_report_else_its_error_file(tmp_path):
    error = tmp_path / "error.txt"
    error.write_text("Traceback ...\n\nRuntimeError: worker died\n")
    trial = SimpleNamespace(trial_id="x", config={"trial_number": 1}, last_result=result(1), error_file=str(error))
    assert TrialOutcome.of_trial(trial, 4, failed=True).failure == "RuntimeError: worker died"
    trial.last_result = {FAILURE_KEY: "out of memory", "training_iteration": 2}
    assert TrialOutcome.of_trial(trial, 4, failed=True).failure == "out of memory"
    assert TrialOutcome.of_trial(trial, 4).failure == "out of memory"  # its own report says it failed


def test_a_trial_without_a_number_is_named_by_its_id_never_trial_00():
    assert trial_name(None, "a1b2") == "trial-a1b2" and trial_name(0, "a1b2") == "trial-00"
    assert TrialOutcome.read("a1b2", None, {}, max_t=4).name == "trial-a1b2"


def test_a_malformed_outcome_or_point_is_refused():
    with pytest.raises(ValueError, match="planned"):
        TrialOutcome("x", 1, 0, 0, None, True, None)
    with pytest.raises(ValueError, match="status"):
        FrontPoint("t", "id", "running", 1, {}, front_point("t", 0.5, 0.5).point)


def test_a_points_row_is_the_csv_and_json_layout():
    p = front_point("trial-03", 0.7, 0.6, "vim", params={"lr": 0.01},
                    by_score={"vim": {"auroc_novel_sub": 0.8, "auroc_novel_super": 0.9}})
    row = json.loads(json.dumps(p.row()))
    assert list(row)[:6] == ["trial", "trial_id", "status", "epochs", "param.lr", "score"]
    assert row["seen"] == 0.7 and row["auroc_novel_sub.vim"] == 0.8 and row["auroc_novel_super.vim"] == 0.9
    assert p.auroc("novel_super") == 0.9 and p.auroc("novel_sub", "msp") != p.auroc("novel_sub", "msp")  # NaN
