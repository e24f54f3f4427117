"""The Parquet image cache: decode once, warm loads open no image, changed content rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import hiertune.data.cache as cache_mod
from hiertune.data.cache import PendingWrites, cache_path, load_images
from hiertune.data.dataset import load_competition
from hiertune.data.images import list_image_files

from conftest import files_under, write_image


@pytest.fixture
def counting_decoder(monkeypatch):
    calls = []
    real = cache_mod.decode_image

    def decode(data, size, label):
        calls.append(label)
        return real(data, size, label)

    monkeypatch.setattr(cache_mod, "decode_image", decode)
    return calls


def test_cold_then_warm_load_decodes_each_image_once(tiny_data, cache_root, counting_decoder):
    image_dir = tiny_data / "train_images"
    names = list_image_files(image_dir)
    cold, report = load_images(image_dir, names, 64, cache_root)
    assert report.status == "built" and report.decoded == len(names) == len(counting_decoder)
    expected = np.stack([np.asarray(Image.open(image_dir / n)) for n in names])
    assert np.array_equal(cold, expected)

    counting_decoder.clear()
    warm, report = load_images(image_dir, names, 64, cache_root)
    assert report.status == "warm" and report.decoded == 0 and counting_decoder == []
    assert np.array_equal(warm, expected)
    # One self-describing file; the pixels are stored as one fixed-size binary per image.
    table = pq.read_table(cache_path(cache_root, image_dir, 64))
    assert table.num_rows == len(names)
    assert table.schema.field("pixels").type.byte_width == 64 * 64 * 3


def test_changed_file_is_decoded_again_alone(tiny_data, cache_root, counting_decoder):
    image_dir = tiny_data / "train_images"
    names = list_image_files(image_dir)
    old, _ = load_images(image_dir, names, 64, cache_root)
    old_five = old[names.index("5.jpg")].copy()
    write_image(image_dir / "5.jpg", seed=999)
    counting_decoder.clear()
    pixels, report = load_images(image_dir, names, 64, cache_root)
    assert report.status == "updated" and report.decoded == 1
    assert counting_decoder == ["train_images/5.jpg"]
    stored = np.asarray(Image.open(image_dir / "5.jpg"))
    assert np.array_equal(pixels[names.index("5.jpg")], stored)
    assert not np.array_equal(stored, old_five)
    # And the update was persisted: the next load is warm again.
    counting_decoder.clear()
    assert load_images(image_dir, names, 64, cache_root)[1].status == "warm"
    assert counting_decoder == []


def test_touched_but_unchanged_file_is_not_decoded(tiny_data, cache_root, counting_decoder):
    image_dir = tiny_data / "train_images"
    names = list_image_files(image_dir)
    load_images(image_dir, names, 64, cache_root)
    st = os.stat(image_dir / "3.jpg")
    os.utime(image_dir / "3.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    counting_decoder.clear()
    _, report = load_images(image_dir, names, 64, cache_root)
    assert counting_decoder == [] and report.decoded == 0
    assert report.status == "updated"  # only the stored stat was refreshed
    assert load_images(image_dir, names, 64, cache_root)[1].status == "warm"


def test_added_and_removed_files_and_reordering(tiny_data, cache_root, counting_decoder):
    image_dir = tiny_data / "test_images"
    names = list_image_files(image_dir)
    load_images(image_dir, names, 64, cache_root)
    write_image(image_dir / "17.jpg", seed=17)
    counting_decoder.clear()
    grown = list_image_files(image_dir)
    pixels, report = load_images(image_dir, grown, 64, cache_root)
    assert counting_decoder == ["test_images/17.jpg"] and len(pixels) == 5
    reordered = list(reversed(grown[:3]))
    pixels, report = load_images(image_dir, reordered, 64, cache_root)
    assert report.decoded == 0
    for i, name in enumerate(reordered):
        assert np.array_equal(pixels[i], np.asarray(Image.open(image_dir / name)))


def test_corrupt_cache_file_is_rebuilt_not_trusted(tiny_data, cache_root):
    image_dir = tiny_data / "train_images"
    names = list_image_files(image_dir)
    good, _ = load_images(image_dir, names, 64, cache_root)
    path = cache_path(cache_root, image_dir, 64)
    path.write_bytes(path.read_bytes()[:1000])
    pixels, report = load_images(image_dir, names, 64, cache_root)
    assert report.status == "built" and np.array_equal(pixels, good)


def test_pending_writes_wait_for_commit(tiny_data, cache_root):
    pending = PendingWrites()
    load_competition(tiny_data, 64, cache_root, pending=pending)
    assert files_under(cache_root) == []
    pending.commit()
    assert len(files_under(cache_root)) == 2  # train and test


def test_write_failure_leaves_no_partial_cache(tiny_data, cache_root, monkeypatch):
    def broken_write(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.pq, "write_table", broken_write)
    image_dir = tiny_data / "train_images"
    with pytest.raises(OSError, match="disk full"):
        load_images(image_dir, list_image_files(image_dir), 64, cache_root)
    assert files_under(cache_root) == []


def test_image_size_is_part_of_the_key(tiny_data, cache_root):
    image_dir = tiny_data / "train_images"
    names = list_image_files(image_dir)
    small, report = load_images(image_dir, names, 32, cache_root)
    assert small.shape == (30, 32, 32, 3) and report.fixes.resized == 30
    assert load_images(image_dir, names, 64, cache_root)[1].status == "built"
    assert len(files_under(cache_root)) == 2
