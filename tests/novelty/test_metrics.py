"""Leaderboard metrics pinned by hand; Pareto front and hypervolume against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hiertune.novelty.metrics import auroc, fpr_at_95, hypervolume_2d, leaderboard_metrics, oscr, pareto_front

# Two seen superclasses (novel = 2), four seen subclasses (novel = 4); subclasses 0, 1 are in
# superclass 0 and 2, 3 in superclass 1. Columns: true super, true sub, pred super, pred sub.
ROWS = [
    (0, 0, 0, 0),  # seen: both right
    (0, 1, 0, 0),  # seen: super right, sub wrong
    (1, 2, 2, 4),  # seen, wrongly called novel at both levels
    (1, 4, 1, 4),  # novel subclass of a known superclass: both right
    (1, 4, 1, 3),  # novel subclass taken for a seen one: sub wrong
    (2, 4, 2, 4),  # novel superclass: both right
    (2, 4, 0, 1),  # novel superclass taken for seen: both wrong
    (2, 4, 2, 4),  # novel superclass: both right
]


def test_leaderboard_metrics_by_hand():
    ts, tb, ps, pb = zip(*ROWS)
    m = leaderboard_metrics(ps, pb, ts, tb, n_super=2, n_sub=4)
    expected = {
        "seen_super_acc": 4 / 5,
        "unseen_super_acc": 2 / 3,
        "seen_sub_acc": 1 / 3,
        "unseen_sub_acc": 3 / 5,  # rows 4, 6, 8: novel-superclass rows count here too
        "overall_super_acc": 6 / 8,
        "overall_sub_acc": 4 / 8,
        "seen": (4 / 5 + 1 / 3) / 2,
        "unseen": (2 / 3 + 3 / 5) / 2,
    }
    assert m == pytest.approx(expected)


def test_empty_group_is_nan_and_objectives_average_the_rest():
    ts, tb, ps, pb = zip(*ROWS[:5])  # no novel-superclass images
    m = leaderboard_metrics(np.array(ps), np.array(pb), np.array(ts), np.array(tb), 2, 4)
    assert math.isnan(m["unseen_super_acc"])
    assert m["unseen"] == pytest.approx(m["unseen_sub_acc"]) == pytest.approx(1 / 2)


def _brute_front(points: np.ndarray) -> set[tuple[float, float]]:
    keep = set()
    for p in points:
        if np.isnan(p).any():
            continue
        dominated = any((q >= p).all() and (q > p).any() for q in points if not np.isnan(q).any())
        if not dominated:
            keep.add(tuple(p))
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    # Coarse values make exact ties and duplicates common; a few NaN rows must be ignored.
    points = rng.integers(0, 8, (60, 2)).astype(float) / 7 if seed % 2 else rng.random((60, 2))
    points[rng.choice(60, 3, replace=False), rng.integers(0, 2)] = np.nan
    idx = pareto_front(points)
    front = [tuple(points[i]) for i in idx]
    assert len(front) == len(set(front))  # one of each identical point
    assert set(front) == _brute_front(points)
    assert all(a[0] > b[0] for a, b in zip(front, front[1:]))  # first coordinate descending


def test_pareto_front_of_nothing():
    assert pareto_front(np.zeros((0, 2))).tolist() == []
    assert hypervolume_2d(np.zeros((0, 2))) == 0.0


def _brute_hypervolume(points: np.ndarray, ref) -> float:
    rx, ry = ref
    xs = np.unique(np.append(np.maximum(points[:, 0], rx), rx))
    ys = np.unique(np.append(np.maximum(points[:, 1], ry), ry))
    area = 0.0
    for x0, x1 in zip(xs, xs[1:]):
        for y0, y1 in zip(ys, ys[1:]):
            if ((points[:, 0] >= x1) & (points[:, 1] >= y1)).any():
                area += (x1 - x0) * (y1 - y0)
    return area


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ref", [(0.0, 0.0), (0.2, 0.1)])
def test_hypervolume_matches_brute_force(seed, ref):
    rng = np.random.default_rng(seed)
    points = rng.random((40, 2)) * 1.2 - 0.1  # some points fall below the reference
    assert hypervolume_2d(points, ref) == pytest.approx(_brute_hypervolume(points, ref))


def test_hypervolume_of_one_point_is_its_box():
    assert hypervolume_2d([[0.5, 0.4]]) == pytest.approx(0.2)
    assert hypervolume_2d([[0.5, 0.4], [0.5, 0.4], [0.2, 0.1]]) == pytest.approx(0.2)


def test_auroc_by_hand():
    assert auroc([3, 4, 5], [1, 2, 3]) == pytest.approx(8.5 / 9)  # the 3-vs-3 tie counts half
    assert auroc([2, 3], [0, 1]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert math.isnan(auroc([1, 2], []))


def test_non_finite_scores_keep_their_order():
    assert auroc([1.0, np.inf], [-np.inf, np.nan]) == 1.0
    assert auroc([-np.inf], [0.0]) == 0.0


def test_fpr_at_95_by_hand():
    # Accepting scores >= 1 keeps 19 of the 20 known images; 3 of 4 novel ones pass too.
    assert fpr_at_95(np.arange(20), [0.5, 1.5, 2.5, 100]) == pytest.approx(0.75)
    assert fpr_at_95(np.arange(20), [-1, -2]) == 0.0


def test_oscr_by_hand():
    # Thresholds high to low: (novel accepted, correct known accepted) steps through
    # (0, 1/4), (0, 2/4), (1/2, 2/4), (1/2, 3/4), (1, 3/4): area 1/2*2/4 + 1/2*3/4.
    scores_known = [0.9, 0.8, 0.7, 0.6]
    correct = [True, True, False, True]
    assert oscr(correct, scores_known, [0.75, 0.5]) == pytest.approx(0.625)
    assert oscr([True] * 3, [3, 4, 5], [0, 1]) == pytest.approx(1.0)  # perfect: AUROC at full accuracy
    assert oscr([False, False], [3, 4], [0, 1]) == 0.0


def test_auroc_and_fpr95_equal_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    for _ in range(100):
        n_known, n_novel = rng.integers(1, 60, 2)
        known = np.round(rng.normal(size=n_known) * rng.choice([1, 5]), rng.integers(0, 2))
        novel = np.round(rng.normal(size=n_novel) - 0.5, rng.integers(0, 2))
        labels, scores = np.r_[np.ones(n_known), np.zeros(n_novel)], np.r_[known, novel]
        assert auroc(known, novel) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        assert fpr_at_95(known, novel) == fpr[np.searchsorted(tpr, 0.95, side="left")]
