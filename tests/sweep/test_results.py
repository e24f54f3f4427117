"""hiertune.sweep.results: what `sweep` and `pareto` return, for a person and as JSON."""

from __future__ import annotations

import json

import pytest

from conftest import front_point
from hiertune.sweep.results import Importance, ParetoResult, SweepFront, SweepResult
from hiertune.sweep.state import TrialCounts

FRONT = [front_point("trial-00", 0.9, 0.3), front_point("trial-01", 0.7, 0.7), front_point("trial-02", 0.2, 0.95)]


def sweep(front: SweepFront, ended: str = "finished", **counts) -> SweepResult:
    return SweepResult("s", "/st", "/st/s", "sqlite:////st/mlflow.db", ended, 600.0, TrialCounts(**counts), 1, "ASHA",
                       42.0, front, Importance({"hypervolume": {"lr": 1.0}}, None, "sqlite:////st/s/optuna.db"))


def test_the_summary_and_its_json_say_the_same():
    front = SweepFront(30, FRONT, "knee", FRONT[1], "/st/s/pareto.csv", "/st/s/pareto.png", "/st/s/pareto.html")
    result = sweep(front, completed=2, stopped=1)
    text = result.render()
    assert text.startswith("sweep s: 2 completed, 1 stopped by ASHA, 0 failed in 42s")
    assert "front: 3 of 30 trial × post-hoc points" in text and "* recommended (knee): trial-01 at 3 epochs" in text
    assert "parameter importance" in text and "next:" in text and "next:" not in result.render(with_next_steps=False)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["trials"] == {"completed": 2, "stopped": 1, "failed": 0, "interrupted": 0}
    assert data["recommended"]["trial"] == "trial-01" and [p["trial"] for p in data["front"]] == [
        "trial-00", "trial-01", "trial-02"]
    assert data["importance"]["study"].endswith("optuna.db")


def test_a_budget_or_ctrl_c_ending_says_what_is_left():
    front = SweepFront(0, [], "knee", None, "a", "b", "c")
    assert "1 cut by it, 1 not started: the 10m00s budget ended the sweep" in sweep(
        front, "budget", completed=1, interrupted=1).render()
    assert sweep(front, "interrupted", completed=1, stopped=1, interrupted=2).interrupted_line() == \
        "2 trial(s) finished, 2 cut (the resume continues them), 1 not started"
    assert "no recommended point" in front.render_recommended()


def test_the_recommended_point_must_be_on_the_front():
    with pytest.raises(ValueError, match="one of the front's"):
        SweepFront(3, FRONT[:2], "knee", front_point("trial-09", 0.5, 0.5), "a", "b", "c")


def test_pareto_with_groups_details_the_picked_point():
    front = SweepFront(3, FRONT, "knee", FRONT[1], "a", "b", "c")
    result = ParetoResult("s", front, True, FRONT[2], "max-unseen")
    assert "max-unseen point:\ntrial-02 (epochs 3)" in result.render()
    assert result.to_dict()["picked"]["trial"] == "trial-02" and result.to_dict()["picked_by"] == "max-unseen"
