"""hiertune.training.records: an epoch's metrics, flattened for Ray and MLflow and read back."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from conftest import epoch
from hiertune.training.config import TrialConfig
from hiertune.novelty.records import GridPoint
from hiertune.training.records import LR_NOW, EpochMetrics


@pytest.fixture(scope="module")
def real_epoch(trained_cnn) -> EpochMetrics:
    """A real epoch of a small cnn, with a shifted group and every score the trial can fit."""
    return trained_cnn.metrics


def test_every_metric_of_a_real_epoch_survives_flat_and_back_through_json(real_epoch):
    flat = real_epoch.flat()
    assert len(flat) > 100 and real_epoch.scores and len(real_epoch.front) >= 1
    # Ray and MLflow see JSON-able numbers and a few strings; Ray adds its own keys beside them.
    through_ray = {**json.loads(json.dumps(flat)), "training_iteration": 1, "done": False, "node_id": "n"}
    again = EpochMetrics.from_flat(through_ray)
    assert json.dumps(again.flat(), sort_keys=True) == json.dumps(flat, sort_keys=True)  # NaN-safe equality
    assert again.recommended.score == real_epoch.recommended.score and again.scores == real_epoch.scores


def test_the_learning_rate_is_not_named_like_the_hyperparameter(real_epoch):
    flat = real_epoch.flat()
    assert LR_NOW in flat and "lr" not in flat and 0 <= flat[LR_NOW] <= TrialConfig().lr
    older = {k: v for k, v in flat.items() if k != LR_NOW}  # a history written before the rename
    assert EpochMetrics.from_flat({**older, "lr": 0.5}).lr_now == 0.5


def test_not_an_epoch_is_refused():
    with pytest.raises(ValueError, match="no epoch"):
        EpochMetrics.from_flat({"failure": "diverged", "training_iteration": 3})
    with pytest.raises(ValueError, match="mapping"):
        EpochMetrics.from_flat([1, 2])
    with pytest.raises(ValueError, match="train_loss"):
        EpochMetrics.from_flat({**epoch().flat(), "train_loss": "x"})


@pytest.mark.parametrize(("change", "match"), [
    ({"epoch": 0}, "epoch must be"),
    ({"train_parts": {"loss_super": 1.0}}, "train_parts"),
    ({"front": ((0.5, 0.5, 0.5),)}, "pairs"),
    ({"by_score": {"a,b": None}}, "by_score"),
    ({"photos": {"accuracy": 1.0}}, "photos"),
    ({"point": {"seen": 0.5}}, "GridPoints"),
])
def test_a_malformed_epoch_is_refused_where_it_is_made(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(epoch(), **change)


def test_pairs_are_the_front_or_the_sampled_point():
    e = epoch(1, 0.4, 0.3, front=((0.9, 0.1), (0.2, 0.8)))
    assert e.pairs(False) == [(0.9, 0.1), (0.2, 0.8)] and e.pairs(True) == [(0.4, 0.3)]
    assert e.point_objective == pytest.approx(0.35)
    assert isinstance(e.point, GridPoint) and math.isnan(e.point.seen_acc)
