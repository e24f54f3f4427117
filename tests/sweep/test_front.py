"""hiertune.sweep.front: the picks that rank a front, and the front taken over trials' points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import epoch, front_point
from hiertune.errors import UserError
from hiertune.sweep.front import Pick, compute_front, front_points
from hiertune.novelty.posthoc import PosthocConfig, posthoc_grid
from hiertune.sweep.records import FrontPoint
from hiertune.sweep.state import TrialRecord
from hiertune.training.checkpoint import read_posthoc
from tests.novelty.test_novelty import fit_scorers, heads, synthetic

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
    points = front_points([record], sampled_thresholds=True)
    (point,) = points.at(range(len(points)))
    assert (point.trial, point.score, point.seen, point.unseen, point.epochs) == ("trial-00", "energy", 0.3, 0.9, 2)
    assert point.row()["param.lr"] == 0.1
    damaged = TrialRecord("id1", "trial-01", "completed", 2, {}, str(tmp_path), {"failure": "x"})
    with pytest.raises(UserError, match="trial-01"):
        front_points([damaged], sampled_thresholds=True)


def test_a_sweeps_points_are_its_grids_cells_and_their_front_is_the_front_of_every_point(tmp_path):
    """Two trials' grids (one with a score it could not measure): the arrays hold every measured
    cell in trial, score, τ_super, τ_sub order, `at` makes the FrontPoint of that cell, and the
    front taken on the arrays is compute_front over all the points made one by one."""
    trials = []
    for n, seed in enumerate((2, 5)):
        result = posthoc_grid(synthetic(120, True, seed), heads(True), PosthocConfig(knn_k=5), fit_scorers(seed))
        result.grid[1] = np.nan  # the second score: unmeasured
        (tmp_path / f"c{n}").mkdir()
        result.save(tmp_path / f"c{n}" / "posthoc.npz")
        trials.append(TrialRecord(f"id{n}", f"trial-{n:02d}", "completed", 3, {"lr": 0.1 * (n + 1)},
                                  str(tmp_path / f"c{n}"), {}))
    trials.append(TrialRecord("id9", "trial-09", "failed", 1, {}, str(tmp_path / "c0"), {}))
    points = front_points(trials)
    expected = []
    for t in trials[:2]:
        result = read_posthoc(t.checkpoint)
        for s, i, j in np.ndindex(*result.grid.shape[:3]):
            p = FrontPoint(t.name, t.trial_id, t.status, t.epochs, t.params, result.point(s, i, j), result.by_score)
            if p.measured():
                expected.append(p)
    assert len(points) == len(expected) and len(expected) < 2 * result.grid[..., 0].size
    made = points.at(range(len(points)))
    assert [(p.trial, p.score, p.point.figures()) for p in made] == \
        [(p.trial, p.score, pytest.approx(p.point.figures(), nan_ok=True)) for p in expected]
    assert list(points.score) == [p.score for p in expected]
    assert [(p.trial, p.score, p.seen, p.unseen) for p in points.front()] == \
        [(p.trial, p.score, p.seen, p.unseen) for p in compute_front(expected)]
