"""Every bad-input case of the data layer: one clear line, exit 2, nothing left in the cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import files_under, write_csv, write_image

TRAIN_HEADER = ["image", "superclass_index", "subclass_index", "description"]


def rewrite_train(root: Path, edit) -> None:
    rows = [line.split(",") for line in (root / "train_data.csv").read_text().splitlines()[1:]]
    write_csv(root / "train_data.csv", TRAIN_HEADER, edit(rows))


def set_row(i: int, **values):
    columns = {"image": 0, "superclass_index": 1, "subclass_index": 2}

    def edit(rows):
        for key, value in values.items():
            rows[i][columns[key]] = value
        return rows

    return edit


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an image at all")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_CASES = {
    "missing column": (
        lambda r: write_csv(r / "train_data.csv", ["image", "superclass_index"], [["0.jpg", 0]]),
        "train_data.csv: missing column(s) subclass_index (found: image, superclass_index)"),
    "superclass out of range": (
        lambda r: rewrite_train(r, set_row(3, superclass_index="7")),
        "train_data.csv line 5: superclass_index 7 is outside superclass_mapping.csv (0-1 seen, 2 novel)"),
    "subclass out of range": (
        lambda r: rewrite_train(r, set_row(0, subclass_index="-1")),
        "train_data.csv line 2: subclass_index -1 is outside subclass_mapping.csv (0-5 seen, 6 novel)"),
    "novel label in training data": (
        lambda r: rewrite_train(r, set_row(1, superclass_index="2")),
        "train_data.csv line 3: superclass_index 2 is 'novel'; labeled data holds seen classes only"),
    "index not an integer": (
        lambda r: rewrite_train(r, set_row(2, subclass_index="two")),
        "train_data.csv line 4: subclass_index 'two' is not an integer"),
    "subclass under two superclasses": (
        lambda r: rewrite_train(r, set_row(6, superclass_index="1")),  # row 6 is subclass 0 (superclass 0)
        "train_data.csv line 8: subclass 0 is under superclass 1 here but under superclass 0 at line 2"),
    "duplicate row": (
        lambda r: rewrite_train(r, lambda rows: rows + [rows[4]]),
        "train_data.csv line 32: image 4.jpg is listed twice (first at line 6)"),
    "no rows": (
        lambda r: write_csv(r / "train_data.csv", TRAIN_HEADER, []),
        "train_data.csv: has no rows"),
    "wrong field count": (
        lambda r: (r / "train_data.csv").write_text(
            (r / "train_data.csv").read_text() + "99.jpg,0\n"),
        "train_data.csv line 32: wrong number of fields"),
    "parent escape": (
        lambda r: rewrite_train(r, set_row(5, image="../secret.jpg")),
        "train_data.csv line 7: image name '../secret.jpg' escapes train_images/"),
    "absolute path": (
        lambda r: rewrite_train(r, set_row(5, image="/etc/passwd")),
        "train_data.csv line 7: image name '/etc/passwd' escapes train_images/"),
    "symlink out of the folder": (
        lambda r: (write_image(r.parent / "elsewhere.jpg", 5),
                   (r / "train_images" / "5.jpg").unlink(),
                   os.symlink(r.parent / "elsewhere.jpg", r / "train_images" / "5.jpg")),
        "train_data.csv line 7: image name '5.jpg' resolves outside train_images/"),
    "missing image": (
        lambda r: (r / "train_images" / "9.jpg").unlink(),
        "train_data.csv line 11: train_images/9.jpg: image does not exist"),
    "corrupt image": (
        lambda r: corrupt(r / "train_images" / "12.jpg"),
        "train_data.csv line 14: train_images/12.jpg: cannot decode image"),
    "truncated image": (
        lambda r: truncate(r / "train_images" / "13.jpg"),
        "train_data.csv line 15: train_images/13.jpg: cannot decode image"),
    "corrupt test image": (
        lambda r: corrupt(r / "test_images" / "2.jpg"),
        "test_images/2.jpg: cannot decode image"),
    "empty test folder": (
        lambda r: [p.unlink() for p in (r / "test_images").iterdir()],
        "test_images/: folder has no images"),
    "missing mapping": (
        lambda r: (r / "subclass_mapping.csv").unlink(),
        "subclass_mapping.csv: file not found"),
    "mapping without novel": (
        lambda r: write_csv(r / "superclass_mapping.csv", ["index", "class"], [[0, "bird"], [1, "dog"]]),
        "superclass_mapping.csv: the last class must be 'novel' (found 'dog')"),
    "mapping out of order": (
        lambda r: write_csv(r / "superclass_mapping.csv", ["index", "class"],
                            [[0, "bird"], [2, "dog"], [1, "novel"]]),
        "superclass_mapping.csv line 3: index 2 out of order (expected 1"),
    "missing train folder": (
        lambda r: shutil.rmtree(r / "train_images"),
        "train_images: folder not found"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_data_is_one_line_exit_2_and_leaves_no_cache(case, tiny_data, cli, cache_root):
    damage, message = BAD_CASES[case]
    damage(tiny_data)
    result = cli("data", "inspect", str(tiny_data), "--json")
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("hiertune: error: ")
    assert message in result.err_lines[0]
    assert "Traceback" not in result.err
    assert result.out == ""
    assert files_under(cache_root) == []


def test_missing_data_dir(cli, tmp_path, cache_root):
    result = cli("data", "inspect", str(tmp_path / "nope"))
    assert result.code == 2
    assert result.err_lines == [f"hiertune: error: {tmp_path / 'nope'}: data directory not found"]


def test_corrupting_an_image_after_caching_keeps_the_old_cache_intact(tiny_data, cli, cache_root):
    assert cli("data", "inspect", str(tiny_data)).code == 0
    before = {p: p.read_bytes() for p in files_under(cache_root)}
    corrupt(tiny_data / "train_images" / "3.jpg")
    result = cli("data", "inspect", str(tiny_data))
    assert result.code == 2
    assert "train_data.csv line 5: train_images/3.jpg: cannot decode image" in result.err
    assert {p: p.read_bytes() for p in files_under(cache_root)} == before


def test_non_rgb_images_are_converted_with_a_counted_warning(tiny_data, cli):
    gray = Image.open(tiny_data / "train_images" / "7.jpg").convert("L")
    gray.save(tiny_data / "train_images" / "7.jpg")
    Image.open(tiny_data / "train_images" / "8.jpg").convert("RGBA").save(tiny_data / "train_images" / "8.png")
    rewrite_train(tiny_data, set_row(8, image="8.png"))
    result = cli("data", "inspect", str(tiny_data), "--json")
    assert result.code == 0
    assert "warning: train images: converted 2 non-RGB image(s) to RGB" in result.err
    from hiertune.data.dataset import load_competition
    data = load_competition(tiny_data, 64, Path(os.environ["HIERTUNE_CACHE_DIR"]))
    i = data.train.names.index("7.jpg")
    expected = np.asarray(Image.open(tiny_data / "train_images" / "7.jpg").convert("RGB"))
    assert np.array_equal(data.train.images[i], expected)
    assert np.ptp(data.train.images[i].astype(int), axis=2).max() == 0  # gray stays gray in all channels
    assert data.caches["train"].fixes.converted == 2


def test_wrong_size_images_are_resized_with_a_counted_warning(tiny_data, cli):
    write_image(tiny_data / "train_images" / "4.jpg", 4, size=80)
    write_image(tiny_data / "test_images" / "1.jpg", 4, size=32)
    result = cli("data", "inspect", str(tiny_data), "--json")
    assert result.code == 0
    assert "warning: train images: resized 1 image(s) to 64x64" in result.err
    assert "warning: test images: resized 1 image(s) to 64x64" in result.err
    from hiertune.data.dataset import load_competition
    data = load_competition(tiny_data, 64, Path(os.environ["HIERTUNE_CACHE_DIR"]))
    assert data.train.images.shape == (30, 64, 64, 3)
    assert data.test_images.shape == (4, 64, 64, 3)


OUTLIER_CASES = {
    "missing": (lambda o: None, "outlier directory not found"),
    "no class folders": (lambda o: (o.mkdir(), write_image(o / "a.jpg", 1)),
                         "outlier directory has no class folders (images must sit in one sub-folder per class)"),
    "one class": (lambda o: write_image(o / "only" / "a.jpg", 1),
                  "outlier directory needs at least 2 class folders"),
    "empty class": (lambda o: (write_image(o / "a" / "1.jpg", 1), (o / "b").mkdir()),
                    "outliers/b: outlier class folder has no images"),
    "corrupt outlier": (lambda o: (write_image(o / "a" / "1.jpg", 1), write_image(o / "b" / "1.jpg", 2),
                                   corrupt(o / "b" / "1.jpg")),
                        "outliers/b/1.jpg: cannot decode image"),
}


@pytest.mark.parametrize("case", list(OUTLIER_CASES))
def test_bad_outlier_dirs(case, tiny_data, tmp_path, cli, cache_root):
    build, message = OUTLIER_CASES[case]
    outliers = tmp_path / "outliers"
    build(outliers)
    result = cli("data", "inspect", str(tiny_data), "--outliers", str(outliers))
    assert result.code == 2
    assert len(result.err_lines) == 1 and message in result.err_lines[0], result.err
    assert files_under(cache_root) == []
