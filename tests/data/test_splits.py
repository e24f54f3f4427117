"""Seeded splits: stratified, pseudo-novel held out entirely, disjoint outlier pools."""

from __future__ import annotations

import numpy as np
import pytest

from hiertune.data.dataset import load_competition
from hiertune.data.outliers import load_outlier_folder
from hiertune.data.splits import NOVEL_SUB, NOVEL_SUPER, SEEN, SHIFTED, SplitConfig, assemble, make_splits
from hiertune.errors import UserError

# 3 superclasses x 10 subclasses x 20 images, and 10 outlier classes x 30 images.
SUPER = np.repeat(np.arange(3), 200)
SUB = np.repeat(np.arange(30), 20)
OUTLIER_CLASS = np.repeat(np.arange(10), 30)


def split(**kw):
    return make_splits(SUPER, SUB, OUTLIER_CLASS, SplitConfig(**kw))


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = split(seed=3), split(seed=3), split(seed=4)
    for field in ("train", "val", "pseudo_novel_subclasses", "outlier_train", "outlier_val"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.val, c.val)


def test_pseudo_novel_subclasses_are_per_superclass_and_never_trained_on():
    s = split(pseudo_novel_fraction=0.2)
    held = s.pseudo_novel_subclasses
    assert np.bincount(held // 10, minlength=3).tolist() == [2, 2, 2]
    assert not np.isin(SUB[s.train], held).any()
    # Every image of a held-out subclass is in validation.
    assert np.isin(np.flatnonzero(np.isin(SUB, held)), s.val).all()


def test_train_val_is_stratified_by_subclass_and_disjoint():
    s = split(val_fraction=0.25, pseudo_novel_fraction=0.2)
    assert not np.intersect1d(s.train, s.val).size
    assert len(s.train) + len(s.val) == len(SUB)
    seen = np.setdiff1d(np.arange(30), s.pseudo_novel_subclasses)
    val_counts = np.bincount(SUB[s.val], minlength=30)[seen]
    train_counts = np.bincount(SUB[s.train], minlength=30)[seen]
    assert (val_counts == 5).all() and (train_counts == 15).all()


def test_outlier_pools_are_disjoint_by_class_and_count_draws_from_training_pool():
    s = split(outlier_val_fraction=0.3, outlier_count=100)
    assert len(s.outlier_val_classes) == 3 and len(s.outlier_train_classes) == 7
    assert not np.intersect1d(OUTLIER_CLASS[s.outlier_train], OUTLIER_CLASS[s.outlier_val]).size
    assert len(s.outlier_train) == 100 and np.isin(OUTLIER_CLASS[s.outlier_train], s.outlier_train_classes).all()
    assert len(s.outlier_val) == 90


def test_outlier_count_changes_nothing_else_and_larger_counts_are_supersets():
    small, large = split(outlier_count=50), split(outlier_count=150)
    assert np.array_equal(small.val, large.val) and np.array_equal(small.train, large.train)
    assert np.array_equal(small.outlier_val, large.outlier_val)
    assert np.isin(small.outlier_train, large.outlier_train).all()


def test_outlier_count_beyond_pool_is_a_clear_error():
    with pytest.raises(UserError, match=r"outlier_count 500 exceeds the outlier training pool \(210 images in 7 classes\)"):
        split(outlier_count=500)


@pytest.mark.parametrize("kw, message", [
    ({"val_fraction": 1.0}, "split: val_fraction must be in [0, 1), got 1.0"),
    ({"pseudo_novel_fraction": -0.1}, "split: pseudo_novel_fraction must be in [0, 1), got -0.1"),
    ({"outlier_count": -5}, "split: outlier_count must be >= 0, got -5"),
])
def test_bad_split_config(kw, message):
    with pytest.raises(UserError) as err:
        SplitConfig(**kw)
    assert str(err.value) == message


def test_assemble_labels_novel_targets(tiny_data, tiny_outliers, cache_root):
    data = load_competition(tiny_data, 64, cache_root)
    outliers = load_outlier_folder(tiny_outliers, 64, cache_root)
    s = make_splits(data.train.superclass, data.train.subclass, outliers.class_index,
                    SplitConfig(pseudo_novel_fraction=0.34, outlier_val_fraction=0.5, outlier_count=4))
    d = assemble(data, outliers, s)
    h = data.hierarchy
    # The images are laid out on first use only (a trial on cached features never reads them), once.
    assert "_images" not in vars(d)
    assert d.train_images is d.train_images and "_images" in vars(d)
    assert len(d.train_images) == len(s.train) + 4
    assert len(d.val_images) == len(s.val) + len(s.outlier_val)
    # Training: seen labels, then outliers as the novel class of both heads.
    assert (d.train_superclass[-4:] == h.novel_superclass).all() and (d.train_subclass[-4:] == h.novel_subclass).all()
    assert (d.train_subclass[:-4] < h.novel_subclass).all()
    # Validation: pseudo-novel images keep their superclass and get the novel subclass.
    n_val = len(s.val)
    novel_sub = d.val_subclass[:n_val] == h.novel_subclass
    assert novel_sub.sum() == np.isin(data.train.subclass[s.val], s.pseudo_novel_subclasses).sum() > 0
    assert (d.val_superclass[:n_val] < h.novel_superclass).all()
    assert (d.val_superclass[n_val:] == h.novel_superclass).all()
    assert np.array_equal(d.val_images[0], data.train.images[s.val[0]])
    # Every validation image is in one named group, in the order the images are.
    assert np.array_equal(d.val_group[:n_val], np.where(novel_sub, NOVEL_SUB, SEEN))
    assert (d.val_group[n_val:] == NOVEL_SUPER).all()
    # A shifted group joins validation after the in-source images, before the outliers.
    shifted = (d.val_images[:2] // 2, np.array([0, 1]), np.array([0, 3]))
    e = assemble(data, outliers, s, shifted)
    assert np.array_equal(e.val_group, np.concatenate([d.val_group[:n_val], [SHIFTED, SHIFTED], d.val_group[n_val:]]))
    assert np.array_equal(e.val_images[n_val:n_val + 2], shifted[0])
    assert e.val_subclass[n_val:n_val + 2].tolist() == [0, 3]
