"""Real photos as a training source: the seeded split by image, and the held-out species."""

from __future__ import annotations

import numpy as np
import pytest

from hiertune.training.config import TrialConfig
from hiertune.data.bundle import load_bundle
from hiertune.data.corrupt import ShiftConfig
from hiertune.data.photo_split import holdout_subclasses, training_rows
from hiertune.data.splits import SHIFTED, SplitConfig
from hiertune.errors import UserError


def test_training_rows_take_a_seeded_share_of_each_subclass_and_skip_the_held_out():
    sub = np.repeat([4, 7, 9], [10, 20, 5])
    rows = training_rows(sub, 0.5, np.array([9]), seed=3)
    assert np.array_equal(np.bincount(sub[rows], minlength=10)[[4, 7, 9]], [5, 10, 0])
    assert np.array_equal(rows, np.sort(rows)) and len(set(rows)) == len(rows)
    assert np.array_equal(rows, training_rows(sub, 0.5, np.array([9]), seed=3))
    assert not np.array_equal(rows, training_rows(sub, 0.5, np.array([9]), seed=4))
    # A larger share is drawn from the same permutation: a superset.
    assert set(rows) <= set(training_rows(sub, 0.8, np.array([9]), seed=3))
    assert len(training_rows(sub, 0.0, np.empty(0), seed=3)) == 0
    assert len(training_rows(sub, 1.0, np.empty(0), seed=3)) == len(sub)


def test_holdout_names_must_be_subclasses():
    assert np.array_equal(holdout_subclasses(("b", "c"), ("a", "b", "c"), "here"), [1, 2])
    with pytest.raises(UserError, match="^here: shifted_holdout names unknown subclass\\(es\\): 'x'"):
        holdout_subclasses(("b", "x"), ("a", "b", "c"), "here")


def test_shifted_photo_settings_are_validated():
    with pytest.raises(UserError, match="shifted_train_fraction must be in \\[0, 1\\]"):
        TrialConfig(shifted="data", shifted_data="x", shifted_train_fraction=1.5)
    with pytest.raises(UserError, match="shifted_train_fraction splits --shifted-data photos; it needs shifted=data"):
        TrialConfig(shifted_train_fraction=0.5)
    with pytest.raises(UserError, match="shifted_holdout splits --shifted-data photos"):
        TrialConfig(shifted_holdout="sub1")
    with pytest.raises(UserError, match="outlier_weight weighs outlier rows of outlier_mode class"):
        TrialConfig(outlier_mode="oe", outlier_weight=0.5)
    with pytest.raises(UserError, match="outlier_levels must be one of"):
        TrialConfig(outlier_levels="neither")
    cfg = TrialConfig(shifted="both", shifted_data="x", shifted_train_fraction=0.5, shifted_holdout="a, x; b")
    assert cfg.shift_config().holdout == ("a, x", "b") and cfg.shift_config().train_fraction == 0.5


def test_photos_split_by_image_between_training_and_seen_shifted(tiny_data, tmp_path):
    split = SplitConfig(val_fraction=0.2, pseudo_novel_fraction=0.0, seed=0)
    shift = ShiftConfig(source="both", data=str(tiny_data), train_fraction=0.6, holdout=("sub2",))
    bundle = load_bundle(str(tiny_data), None, 32, split, tmp_path, shift)
    g = bundle.shifted
    photos = np.flatnonzero(g.photo)
    assert len(photos) == 30 and not g.photo[:len(g.images) - 30].any()  # corruptions first, then the photos
    assert set(g.train_rows) <= set(photos) and not set(g.train_rows) & set(g.val_rows)
    assert sorted([*g.train_rows, *g.val_rows]) == list(range(len(g.images)))
    trained = g.subclass[g.train_rows]
    assert 2 not in trained and np.array_equal(np.bincount(trained, minlength=6), [3, 3, 0, 3, 3, 3])
    trial = bundle.for_trial(None)
    base = load_bundle(str(tiny_data), None, 32, split, tmp_path, ShiftConfig(source="both", data=str(tiny_data)))
    plain = base.for_trial(None)
    # The photos that train follow the labeled training images; the rest validate as seen_shifted.
    n = len(plain.train_images)
    assert len(trial.train_images) == n + len(g.train_rows)
    assert np.array_equal(trial.train_images[n:], g.images[g.train_rows])
    assert np.array_equal(trial.train_subclass[n:], g.subclass[g.train_rows])
    assert (trial.val_group == SHIFTED).sum() == len(g.val_rows) == (plain.val_group == SHIFTED).sum() - len(g.train_rows)
    assert bundle.summary()["shifted_train"] == 15
    again = load_bundle(str(tiny_data), None, 32, split, tmp_path, shift)
    assert np.array_equal(again.shifted.train_rows, g.train_rows)
    with pytest.raises(UserError, match="shifted_holdout names unknown subclass"):
        load_bundle(str(tiny_data), None, 32, split, tmp_path,
                    ShiftConfig(source="data", data=str(tiny_data), holdout=("zebra",)))


def test_a_trial_trains_on_photos_and_reports_each_species(tiny_data, tmp_path):
    from hiertune.training.features import FeatureStore
    from hiertune.training.loop import run_trial

    # A frozen backbone: the photos that train come from the cached shifted pool's features.
    cfg = TrialConfig(family="dualhead", backbone="resnet10t", finetune="linear", feature_views=2, data=str(tiny_data),
                      data_size=32, image_size=32, epochs=2, batch_size=8, threads=1, shifted="data",
                      shifted_data=str(tiny_data), shifted_train_fraction=0.5, shifted_holdout="sub0",
                      pseudo_novel_fraction=0.0, val_fraction=0.2)
    bundle = load_bundle(cfg.data, None, 32, cfg.split_config(), tmp_path, cfg.shift_config())
    reports = []
    final = run_trial(cfg, bundle, lambda m, d: reports.append(m), features=FeatureStore(tmp_path), last_only=True)
    assert len(reports) == 1 and final.epoch == 2 and final is reports[0]
    assert final.train_images == len(bundle.splits.train) + len(bundle.shifted.train_rows) == 24 + 5 * 2  # round(2.5): 2 of 5
    validating = {f"sub{s}" for s in np.unique(bundle.shifted.subclass[bundle.shifted.val_rows])}
    assert validating == {f"sub{i}" for i in range(6)}  # sub0 wholly, the others' other half
    for name in validating:
        assert 0.0 <= final.photos[f"photos_super_acc.{name}"] <= 1.0 and f"photos_called_novel.{name}" in final.photos
    assert 0.0 <= final.photos["photos_sub_acc"] <= 1.0 and 0.0 <= final.photos["photos_called_novel"] <= 1.0
