"""hiertune.sweep.front: the picks that rank a front, and the front taken over trials' points."""

from __future__ import annotations

import json

import pytest

from conftest import epoch, front_point
from hiertune.errors import UserError
from hiertune.sweep.front import Pick, compute_front, front_points
from hiertune.sweep.state import TrialRecord

FRONT = [front_point(t, s, u) for t, s, u in
         [("a", 0.95, 0.10), ("b", 0.90, 0.60), ("b", 0.85, 0.65), ("c", 0.50, 0.80), ("d", 0.10, 0.90)]]


@pytest.mark.parametrize(("pick", "first"), [("knee", "b"), ("max-seen", "a"), ("max-unseen", "d"),
                                             ("weight=0.25", "c"), ("weight=1", "a")])
def test_picks_rank_the_front(pick, first):
    assert Pick.parse(pick).rank(FRONT)[0].trial == first


def test_choose_takes_distinct_trials():
    chosen = Pick.parse("knee").choose(FRONT, 3)
    assert [(p.trial, p.seen) for p in chosen] == [("b", 0.85), ("c", 0.50), ("a", 0.95)]
    assert len(Pick.parse("max-seen").choose(FRONT, 10)) == 4


@pytest.mark.parametrize("text", ["kne", "weight=2", "weight=x"])
def test_a_misspelt_pick_is_one_line(text):
    with pytest.raises(UserError, match="--pick"):
        Pick.parse(text)


def test_compute_front_keeps_the_non_dominated_points_seen_descending():
    points = [front_point("x", 0.5, 0.5), front_point("y", 0.6, 0.4), front_point("z", 0.4, 0.4)]
    assert [p.trial for p in compute_front(points)] == ["y", "x"]


def test_sampled_thresholds_give_each_trial_its_own_point_from_its_last_metrics(tmp_path):
    """The sampled-threshold front reads a trial's point from its recorded metrics as the epoch
    record reads them back: the config's own point, never the trial's recommended one."""
    last = epoch(2, 0.7, 0.6)
    last = type(last)(**{**last.__dict__, "point": front_point("t", 0.3, 0.9, "energy").point})
    record = TrialRecord("id0", "trial-00", "completed", 2, {"lr": 0.1}, str(tmp_path), json.loads(
        json.dumps({**last.flat(), "training_iteration": 2})))
    (point,) = front_points([record], sampled_thresholds=True)
    assert (point.trial, point.score, point.seen, point.unseen, point.epochs) == ("trial-00", "energy", 0.3, 0.9, 2)
    assert point.row()["param.lr"] == 0.1
    damaged = TrialRecord("id1", "trial-01", "completed", 2, {}, str(tmp_path), {"failure": "x"})
    with pytest.raises(UserError, match="trial-01"):
        front_points([damaged], sampled_thresholds=True)
