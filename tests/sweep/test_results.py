"""hiertune.sweep.results: what `sweep` and `pareto` return, for a person and as JSON."""

from __future__ import annotations

import json

import pytest

from conftest import front_point
from hiertune.sweep.front import point_photos
from hiertune.sweep.records import SweepFront
from hiertune.sweep.results import Importance, ParetoResult, SweepResult
from hiertune.sweep.state import TrialCounts, TrialRecord

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


def _trial(**metrics) -> TrialRecord:
    return TrialRecord("id-trial-01", "trial-01", "completed", 3, {}, "/ckpt", metrics)


def test_the_recommended_points_photo_figures_are_the_ones_its_trial_logged():
    logged = {"recommended_score": "msp", "tau_super": 0.9, "tau_sub": 0.8, "photos_super_acc": 0.75,
              "photos_sub_acc": 0.5, "photos_called_novel": 0.125, "photos_super_acc.king_penguin": 1.0,
              "photos_sub_acc.king_penguin": 0.5, "photos_called_novel.king_penguin": 0.0}
    photos = point_photos([_trial(**logged)], FRONT[1])
    front = SweepFront(30, FRONT, "knee", FRONT[1], "a", "b", "c", photos)
    text = sweep(front).render()
    assert ("real photos of known species (--shifted-data, validation), at this point: 87.5% accepted as a known "
            "superclass, 75.0% right superclass, 50.0% right subclass") in text
    assert "per species (accepted/superclass/subclass): king_penguin 100%/100%/50%" in text
    assert json.loads(json.dumps(front.to_dict()))["recommended_photos"]["photos_called_novel"] == 0.125
    # Measured at another τ of the same trial: said so, with that point.
    other = point_photos([_trial(**{**logged, "tau_sub": 0.1})], FRONT[1])
    assert "at msp with τ_super 0.900, τ_sub 0.100, the trial's own recommended point" in other.render()
    # No photos in validation (no --shifted-data), or another trial: nothing to say.
    assert point_photos([_trial(recommended_score="msp")], FRONT[1]) is None
    assert point_photos([_trial(**logged)], FRONT[0]) is None
    assert "real photos" not in SweepFront(30, FRONT, "knee", FRONT[1], "a", "b", "c").render_recommended()
