"""Test-time views of uint8 images (hiertune.data.views)."""

from __future__ import annotations

import numpy as np
import pytest

from hiertune.data.views import ZOOM_KEEP, flip, parse_views, zoom
from hiertune.errors import UserError


def test_flip_mirrors_left_to_right_and_is_its_own_inverse():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    flipped = flip(images)
    assert flipped.flags.c_contiguous and np.array_equal(flipped[:, :, 0], images[:, :, -1])
    assert np.array_equal(flip(flipped), images)


def test_zoom_enlarges_the_centre_to_the_stored_size():
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    images[:, 24:40, 24:40] = 200  # a 16 px square in the centre
    out = zoom(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    # Its side grows by 1 / ZOOM_KEEP (16 -> ~18.3 px): more of the image is bright, the corners stay dark.
    grown = (out[0, :, :, 0] > 100).sum() / (images[0, :, :, 0] > 100).sum()
    assert grown == pytest.approx(1 / ZOOM_KEEP ** 2, rel=0.15) and out[:, :8, :8].max() == 0
    assert np.array_equal(zoom(np.full((1, 64, 64, 3), 77, np.uint8)), np.full((1, 64, 64, 3), 77, np.uint8))


@pytest.mark.parametrize("text, views", [("flip", ("flip",)), ("flip, zoom", ("flip", "zoom")), ("", ())])
def test_views_parse(text, views):
    assert parse_views(text) == views


@pytest.mark.parametrize("text", ["mirror", "flip,flip"])
def test_unknown_or_repeated_views_are_refused(text):
    with pytest.raises(UserError, match="test-time views"):
        parse_views(text)
