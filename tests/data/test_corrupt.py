"""The seen_shifted group: corruptions, the bundle's group, --shifted-data, the example picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hiertune.data.bundle import load_bundle
from hiertune.data.corrupt import CORRUPTIONS, ShiftConfig, corrupt_batch, shifted_copy
from hiertune.data.splits import NOVEL_SUB, SEEN, SHIFTED, SplitConfig
from hiertune.errors import UserError
from hiertune.sweep.plots import plot_shifted_examples


def _images(n=70, seed=0):
    # Smooth random images: every corruption (blur, down-up sampling) visibly changes them.
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    fx, fy = g.uniform(1, 6, (n, 1, 1, 3)), g.uniform(1, 6, (n, 1, 1, 3))
    base = g.uniform(0, 1, (n, 1, 1, 3)) + 0.4 * np.sin(2 * np.pi * (xx[None, ..., None] * fx + yy[None, ..., None] * fy))
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


@pytest.mark.slow
def test_shifted_copy_is_deterministic_for_a_seed_and_differs_from_the_originals():
    images = _images()
    a, kinds = shifted_copy(images, 0.5, seed=3)
    b, kinds_b = shifted_copy(images, 0.5, seed=3)
    assert np.array_equal(a, b) and np.array_equal(kinds, kinds_b)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert set(kinds) == set(range(len(CORRUPTIONS)))  # 70 images draw every corruption
    changed = (a.astype(int) - images).__abs__().mean((1, 2, 3))
    assert (changed > 0.5).all(), [CORRUPTIONS[k] for k in kinds[changed <= 0.5]]
    c, _ = shifted_copy(images, 0.5, seed=4)
    assert not np.array_equal(a, c)
    # Severity scales the change.
    mild, _ = shifted_copy(images, 0.1, seed=3)
    assert np.abs(mild.astype(int) - images).mean() < np.abs(a.astype(int) - images).mean()


def test_grey_and_crop_do_what_they_say():
    images = _images(200, seed=1)
    out, kinds = shifted_copy(images, 1.0, seed=0)
    grey = out[kinds == CORRUPTIONS.index("grey")]
    assert np.abs(grey[..., 0].astype(int) - grey[..., 1]).max() <= 1
    jpeg = kinds == CORRUPTIONS.index("jpeg")
    assert jpeg.any() and (out[jpeg] != images[jpeg]).any()


@pytest.mark.slow
def test_corrupt_batch_reproducible_and_p_controls_the_share():
    batch = torch.from_numpy(_images(64, seed=2))
    assert corrupt_batch(batch, 0.0, 0.5, torch.Generator().manual_seed(0)) is batch
    a = corrupt_batch(batch, 1.0, 0.8, torch.Generator().manual_seed(0))
    b = corrupt_batch(batch, 1.0, 0.8, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == batch.shape
    assert (a != batch).flatten(1).any(1).float().mean() > 0.9
    half = corrupt_batch(batch, 0.3, 0.8, torch.Generator().manual_seed(1))
    share = (half != batch).flatten(1).any(1).float().mean().item()
    assert 0.1 < share < 0.55


@pytest.mark.slow
def test_example_grid_is_a_png(tmp_path):
    images = _images(20)
    out, kinds = shifted_copy(images, 0.5, seed=0)
    plot_shifted_examples(images, out, kinds, tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]


@pytest.mark.slow
def test_bundle_adds_the_shifted_group_to_validation(small_data, tmp_path):
    split = SplitConfig(val_fraction=0.2, pseudo_novel_fraction=0.2, seed=0)
    bundle = load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig(severity=0.5, seed=0))
    trial = bundle.for_trial(None)
    group = trial.val_group
    assert len(group) == len(trial.val_images)
    seen, shifted = group == SEEN, group == SHIFTED
    assert shifted.sum() == seen.sum() > 0 and (group == NOVEL_SUB).any()
    # Shifted copies keep their labels and differ from the seen originals they copy.
    assert np.array_equal(trial.val_subclass[shifted], trial.val_subclass[seen])
    assert (trial.val_images[shifted] != trial.val_images[seen]).any((1, 2, 3)).mean() > 0.9
    again = load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig(severity=0.5, seed=0))
    assert np.array_equal(again.for_trial(None).val_images, trial.val_images)
    none = load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig(source="none"))
    assert not (none.for_trial(None).val_group == SHIFTED).any() and none.shifted is None


@pytest.mark.slow
def test_shifted_data_folder_joins_or_replaces_the_corruptions(small_data, tiny_data, tmp_path):
    split = SplitConfig(val_fraction=0.2, pseudo_novel_fraction=0.2, seed=0)
    corrupt = load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig())
    both = load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig(source="both", data=str(small_data)))
    only = load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig(source="data", data=str(small_data)))
    pseudo = corrupt.splits.pseudo_novel_subclasses
    kept = int((~np.isin(corrupt.data.train.subclass, pseudo)).sum())  # the folder's seen-subclass images
    assert len(only.shifted.images) == kept and "labeled images from" in only.shifted.source
    assert len(both.shifted.images) == len(corrupt.shifted.images) + kept
    assert "corruptions" in both.shifted.source and "labeled images" in both.shifted.source
    assert not np.isin(only.shifted.subclass, pseudo).any()
    with pytest.raises(UserError, match="subclasses not in the training data"):
        load_bundle(str(small_data), None, 32, split, tmp_path, ShiftConfig(source="data", data=str(tiny_data)))
    with pytest.raises(UserError, match="needs shifted_data"):
        ShiftConfig(source="data")
    with pytest.raises(UserError, match="shifted must be one of"):
        ShiftConfig(source="camera")
