"""The competition-format directory: mappings, train_data.csv, train_images/, test_images/.

Everything is validated before any image is decoded, and every problem is one UserError
naming the file and line, so a sweep never starts on data it would choke on hours later.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hiertune.data.cache import CacheReport, PendingWrites, load_images
from hiertune.data.images import (FixCounts, check_distinct_files, check_image_name, check_links_inside,
                                  check_submission_names, list_image_files, name_key, numeric_sort_key,
                                  skipped_files)
from hiertune.data.packed import is_packed, packed_names, read_packed
from hiertune.errors import UserError

NOVEL = "novel"
TRAIN_COLUMNS = ("image", "superclass_index", "subclass_index")
CSV_FILES = ("superclass_mapping.csv", "subclass_mapping.csv", "train_data.csv")
log = logging.getLogger("hiertune")


@dataclass(frozen=True)
class Hierarchy:
    """Seen class names (index = position) and which superclass each subclass belongs to."""

    superclasses: tuple[str, ...]
    subclasses: tuple[str, ...]
    sub_to_super: np.ndarray  # [n_subclasses]; -1 for a subclass with no labeled image

    @property
    def novel_superclass(self) -> int:
        return len(self.superclasses)

    @property
    def novel_subclass(self) -> int:
        return len(self.subclasses)


@dataclass
class LabeledImages:
    names: list[str]
    images: np.ndarray  # [N, H, W, 3] uint8
    superclass: np.ndarray  # [N] int64
    subclass: np.ndarray  # [N] int64


@dataclass
class CompetitionData:
    root: Path
    hierarchy: Hierarchy
    train: LabeledImages
    test_names: list[str]
    test_images: np.ndarray | None  # None when not asked for or the folder is absent
    caches: dict[str, CacheReport] = field(default_factory=dict)

    def fixes(self) -> FixCounts:
        total = FixCounts()
        for report in self.caches.values():
            total.add(report.fixes)
        return total


def load_competition(root: str | Path, image_size: int, cache_root: Path, with_test: bool = True,
                     pending: PendingWrites | None = None) -> CompetitionData:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data directory not found")
    superclasses = read_mapping(root / "superclass_mapping.csv")
    subclasses = read_mapping(root / "subclass_mapping.csv")
    names, sup, sub = _read_train_csv(root, superclasses, subclasses)
    sub_to_super = np.full(len(subclasses), -1, dtype=np.int64)
    sub_to_super[sub] = sup  # consistency was checked row by row
    hierarchy = Hierarchy(tuple(superclasses), tuple(subclasses), sub_to_super)

    train_dir = root / "train_images"
    if _pushed(root):
        return _load_packed(root, hierarchy, names, sup, sub, image_size, with_test)
    if not train_dir.is_dir():
        raise UserError(f"{train_dir}: folder not found")
    sources = [f"train_data.csv line {line}" for line in names.values()]
    check_links_inside(train_dir, list(names), sources)
    check_distinct_files(train_dir, list(names), sources)
    test_dir = root / "test_images"
    test_names = _test_names(test_dir)

    caches: dict[str, CacheReport] = {}
    images, caches["train"] = load_images(train_dir, list(names), image_size, cache_root,
                                          sources=sources, desc="decoding train_images", pending=pending)
    test_images = None
    if with_test and test_names:
        test_images, caches["test"] = load_test_images(root, test_names, image_size, cache_root, pending)
    train = LabeledImages(list(names), images, sup, sub)
    return CompetitionData(root, hierarchy, train, test_names, test_images, caches)


def load_test_images(root: Path, test_names: list[str], image_size: int, cache_root: Path,
                     pending: PendingWrites | None = None) -> tuple[np.ndarray, CacheReport | None]:
    """The pixels of `test_names` (a loaded CompetitionData's, in its order) from `root`'s test
    images, a folder or pushed (no cache report then): for a caller that has the training images
    already and should not load them again (export, the sweep's feature step)."""
    if _pushed(root):
        return read_packed(root, "test_images", image_size, test_names), None
    return load_images(root / "test_images", test_names, image_size, cache_root, desc="decoding test_images",
                       pending=pending)


def _pushed(root: Path) -> bool:
    """Whether `root` is a pushed dataset (hiertune.data.packed): its images are Parquet files."""
    return not (root / "train_images").is_dir() and is_packed(root, "train_images")


def _load_packed(root: Path, hierarchy: Hierarchy, names: dict[str, int], sup: np.ndarray, sub: np.ndarray,
                 image_size: int, with_test: bool) -> CompetitionData:
    """A pushed dataset (see packed.py): the CSVs checked as above, pixels from its Parquet files."""
    train = LabeledImages(list(names), read_packed(root, "train_images", image_size, list(names)), sup, sub)
    test_names, test_images = [], None
    if is_packed(root, "test_images"):
        test_names = packed_names(root, "test_images", image_size, key=numeric_sort_key)
        if with_test:
            test_images = read_packed(root, "test_images", image_size, test_names)
    return CompetitionData(root, hierarchy, train, test_names, test_images)


def read_mapping(path: Path) -> list[str]:
    """Seen class names of an `index,class` mapping whose last class is 'novel'."""
    rows = _read_csv(path, ("index", "class"))
    classes = []
    for line, row in rows:
        index = _int(row["index"], path.name, line, "index")
        if index != len(classes):
            raise UserError(f"{path.name} line {line}: index {index} out of order (expected {len(classes)}; "
                            "indices must run 0, 1, 2, … in file order)")
        classes.append(row["class"])
    if not classes or classes[-1].strip().lower() != NOVEL:
        found = repr(classes[-1]) if classes else "no rows"
        raise UserError(f"{path.name}: the last class must be '{NOVEL}' (found {found})")
    if len(classes) < 2:
        raise UserError(f"{path.name}: no seen classes besides '{NOVEL}'")
    seen = classes[:-1]
    if NOVEL in (c.strip().lower() for c in seen):
        raise UserError(f"{path.name}: '{NOVEL}' may only be the last class")
    return seen


def write_mapping(path: Path, seen: list[str] | tuple[str, ...]) -> None:
    """An `index,class` mapping as read_mapping reads it: the seen classes, then 'novel'."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "class"])
        writer.writerows([*enumerate(seen), (len(seen), NOVEL)])


def _read_train_csv(root: Path, superclasses: list[str], subclasses: list[str]
                    ) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Image name → file line, and the label arrays, after checking every row."""
    path = root / "train_data.csv"
    rows = _read_csv(path, TRAIN_COLUMNS)
    if not rows:
        raise UserError(f"{path.name}: has no rows")
    image_dir = root / "train_images"
    names: dict[str, int] = {}
    keys: dict[str, str] = {}  # name_key → the name first written that way
    first_super: dict[int, tuple[int, int]] = {}  # subclass -> (superclass, line)
    sup = np.empty(len(rows), dtype=np.int64)
    sub = np.empty(len(rows), dtype=np.int64)
    for i, (line, row) in enumerate(rows):
        where = f"{path.name} line {line}"
        name = row["image"]
        check_image_name(name, image_dir.name, where)
        if name in names:
            raise UserError(f"{where}: image {name} is listed twice (first at line {names[name]})")
        if (key := name_key(name)) in keys:
            other = keys[key]
            raise UserError(f"{where}: image {name!r} and {other!r} (line {names[other]}) name one file (they "
                            "differ only in case, './' or Unicode form)")
        names[name], keys[key] = line, name
        sup[i] = _label(row["superclass_index"], superclasses, "superclass", where)
        sub[i] = _label(row["subclass_index"], subclasses, "subclass", where)
        seen_under = first_super.setdefault(int(sub[i]), (int(sup[i]), line))
        if seen_under[0] != sup[i]:
            raise UserError(f"{where}: subclass {sub[i]} is under superclass {sup[i]} here but under "
                            f"superclass {seen_under[0]} at line {seen_under[1]}")
    return names, sup, sub


def _label(text: str, classes: list[str], kind: str, where: str) -> int:
    value = _int(text, where, None, f"{kind}_index")
    if value == len(classes):
        raise UserError(f"{where}: {kind}_index {value} is '{NOVEL}'; labeled data holds seen classes "
                        "only (novel examples come from the outlier source)")
    if not 0 <= value < len(classes):
        raise UserError(f"{where}: {kind}_index {value} is outside {kind}_mapping.csv "
                        f"(0-{len(classes) - 1} seen, {len(classes)} novel)")
    return value


def _int(text: str, file: str, line: int | None, column: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        where = f"{file} line {line}" if line is not None else file
        raise UserError(f"{where}: {column} {text!r} is not an integer") from None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(file line, row) pairs, after checking the file exists and has the required columns."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(f"{path.name}: missing column(s) {', '.join(missing)} "
                                f"(found: {', '.join(header) or 'nothing'})")
            rows = []
            for row in reader:
                if None in row or any(row[c] is None for c in required):
                    raise UserError(f"{path.name} line {reader.line_num}: wrong number of fields")
                rows.append((reader.line_num, row))
            return rows
    except UnicodeDecodeError:
        raise UserError(f"{path.name}: not UTF-8 text") from None
    except csv.Error as exc:
        raise UserError(f"{path.name}: malformed CSV ({exc})") from None


def _test_names(test_dir: Path) -> list[str]:
    if not test_dir.exists():
        return []
    if not test_dir.is_dir():
        raise UserError(f"{test_dir}: not a folder")
    names = list_image_files(test_dir)
    if not names:
        raise UserError(f"{test_dir.name}/: folder has no images")
    check_submission_names(test_dir, names)
    if (warning := skipped_files(test_dir)):
        log.warning(warning)
    return names
