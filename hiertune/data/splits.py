"""Seeded splits implementing the validation protocol of the brief.

- Pseudo-novel subclasses: per superclass, a fraction of its subclasses is held out of training
  entirely; their images are validation's "novel subclass of a known superclass".
- The remaining labeled images split train/validation, stratified by subclass.
- Outlier classes split into a training pool and a disjoint validation pool; validation
  outliers are "novel superclass"; `outlier_count` images are drawn from the training pool.

Each part draws from its own seeded stream, and the outlier draw takes a prefix of one fixed
permutation: a sweep that searches `outlier_count` keeps the same validation set in every
trial, and a larger count is a superset of a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import Callable

import numpy as np

from hiertune.data.dataset import CompetitionData
from hiertune.data.outliers import OutlierSet
from hiertune.errors import UserError

# Validation's named groups (hiertune.novelty reports each): in-source seen subclasses, seen
# subclasses under a shift of camera, pipeline or source (hiertune.data.corrupt), pseudo-novel
# subclasses of seen superclasses (near-OOD), and held-out outlier classes (far-OOD).
GROUPS = ("seen", "seen_shifted", "novel_sub", "novel_super")
SEEN, SHIFTED, NOVEL_SUB, NOVEL_SUPER = range(len(GROUPS))


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.2
    pseudo_novel_fraction: float = 0.15  # of each superclass's subclasses (seed 000 held out 15%)
    outlier_val_fraction: float = 0.3  # of the outlier classes
    outlier_count: int | None = None  # None: the whole training pool
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("val_fraction", "pseudo_novel_fraction", "outlier_val_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UserError(f"split: {name} must be in [0, 1), got {value}")
        if self.outlier_count is not None and self.outlier_count < 0:
            raise UserError(f"split: outlier_count must be >= 0, got {self.outlier_count}")


@dataclass
class Splits:
    train: np.ndarray  # indices into the labeled images
    val: np.ndarray  # seen-subclass validation images, then every pseudo-novel image
    pseudo_novel_subclasses: np.ndarray
    outlier_train: np.ndarray  # indices into the outlier set: the drawn outlier_count
    outlier_val: np.ndarray
    outlier_train_classes: np.ndarray
    outlier_val_classes: np.ndarray
    outlier_pool: np.ndarray  # the training pool in draw order: outlier_train is a prefix of it

    def check_outlier_count(self, count: int, what: str = "split: outlier_count", hint: str = "") -> None:
        """The one check of an outlier_count against the pool: a split's, a trial's, a space's range."""
        if count > len(self.outlier_pool):
            raise UserError(f"{what} {count} exceeds the outlier training pool ({len(self.outlier_pool)} images "
                            f"in {len(self.outlier_train_classes)} classes){hint}")

    def with_outlier_count(self, count: int | None) -> "Splits":
        """The same split with another outlier_count: what a trial that samples it needs."""
        count = len(self.outlier_pool) if count is None else count
        self.check_outlier_count(count)
        return replace(self, outlier_train=np.sort(self.outlier_pool[:count]))

    def summary(self) -> dict:
        return {"train": len(self.train), "val": len(self.val),
                "pseudo_novel_subclasses": self.pseudo_novel_subclasses.tolist(),
                "outlier_train": len(self.outlier_train), "outlier_val": len(self.outlier_val),
                "outlier_train_classes": len(self.outlier_train_classes),
                "outlier_val_classes": len(self.outlier_val_classes)}


def make_splits(superclass: np.ndarray, subclass: np.ndarray, outlier_class: np.ndarray | None,
                config: SplitConfig) -> Splits:
    streams = np.random.SeedSequence(config.seed).spawn(3)
    held_out = _pseudo_novel(superclass, subclass, config.pseudo_novel_fraction,
                             np.random.default_rng(streams[0]))
    train, val = _stratified(subclass, held_out, config.val_fraction, np.random.default_rng(streams[1]))
    novel_images = np.flatnonzero(np.isin(subclass, held_out))
    if outlier_class is None:
        outlier_class = np.empty(0, dtype=np.int64)
    pool, o_val, c_train, c_val = _outliers(outlier_class, config, np.random.default_rng(streams[2]))
    empty = np.empty(0, dtype=np.int64)
    splits = Splits(train, np.concatenate([val, novel_images]), held_out, empty, o_val, c_train, c_val, pool)
    return splits.with_outlier_count(config.outlier_count)


def _pseudo_novel(superclass: np.ndarray, subclass: np.ndarray, fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    held = []
    for s in np.unique(superclass):
        subs = np.unique(subclass[superclass == s])
        # At least one held out when asked for any, and at least one left to learn from.
        n = min(max(round(fraction * len(subs)), 1 if fraction > 0 else 0), len(subs) - 1)
        held.append(rng.permutation(subs)[:n])
    return np.sort(np.concatenate(held)).astype(np.int64)


def _stratified(subclass: np.ndarray, held_out: np.ndarray, fraction: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train, val = [], []
    for c in np.setdiff1d(np.unique(subclass), held_out):
        members = rng.permutation(np.flatnonzero(subclass == c))
        n_val = min(max(round(fraction * len(members)), 1 if fraction > 0 else 0), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _outliers(outlier_class: np.ndarray, config: SplitConfig, rng: np.random.Generator):
    """The training pool in draw order, the validation images, and both class sets."""
    classes = np.unique(outlier_class)
    if len(classes) == 0:
        if config.outlier_count:
            raise UserError(f"split: outlier_count is {config.outlier_count} but no outlier source is set")
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty, empty
    n_val = min(max(round(config.outlier_val_fraction * len(classes)),
                    1 if config.outlier_val_fraction > 0 else 0), len(classes) - 1)
    shuffled = rng.permutation(classes)
    val_classes, train_classes = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])
    pool = rng.permutation(np.flatnonzero(np.isin(outlier_class, train_classes)))
    val = np.flatnonzero(np.isin(outlier_class, val_classes))
    return pool, val, train_classes, val_classes


@dataclass
class SplitData:
    """Targets ready for a trainer (novel targets use the mappings' novel indices), and the images
    they belong to, laid out on first use: a trial on cached features never reads them, and
    copying them out of a bundle in Ray's object store (a few hundred MB) was most of such a
    trial's start-up."""

    train_superclass: np.ndarray
    train_subclass: np.ndarray
    val_superclass: np.ndarray
    val_subclass: np.ndarray
    val_group: np.ndarray  # index into GROUPS per validation image
    layout: Callable[[], tuple[np.ndarray, np.ndarray]] = field(repr=False)  # -> (training, validation) images

    @cached_property
    def _images(self) -> tuple[np.ndarray, np.ndarray]:
        return self.layout()

    @property
    def train_images(self) -> np.ndarray:
        return self._images[0]

    @property
    def val_images(self) -> np.ndarray:
        return self._images[1]


def take_rows(labeled: np.ndarray, outliers: np.ndarray | None, splits: Splits,
              shifted: np.ndarray | None = None, shifted_train: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a per-image array (images, or features computed from them) for training and
    validation, in the order `assemble` lays the images out: training is the labeled training
    images, then the shifted photos that train, then the training outliers; validation is the
    labeled validation images, then the seen_shifted ones, then the validation outliers."""
    parts: tuple[list[np.ndarray], list[np.ndarray]] = [labeled[splits.train]], [labeled[splits.val]]
    if shifted_train is not None:
        parts[0].append(shifted_train)
    if shifted is not None:
        parts[1].append(shifted)
    if outliers is not None:
        for k, idx in enumerate((splits.outlier_train, splits.outlier_val)):
            parts[k].append(outliers[idx])
    train, val = (np.concatenate(p) for p in parts)
    return train, val


Labeled = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, superclass, subclass


def assemble(data: CompetitionData, outliers: OutlierSet | None, splits: Splits,
             shifted: Labeled | None = None, shifted_train: Labeled | None = None) -> SplitData:
    """Train and validation arrays; `shifted` joins validation as the seen_shifted group, and
    `shifted_train` (photos of known subclasses from another source) joins training."""
    h, t = data.hierarchy, data.train
    val_sub = t.subclass[splits.val].copy()
    novel = np.isin(val_sub, splits.pseudo_novel_subclasses)
    val_sub[novel] = h.novel_subclass
    parts_sup = [t.superclass[splits.train]], [t.superclass[splits.val]]
    parts_sub = [t.subclass[splits.train]], [val_sub]
    groups = [np.where(novel, NOVEL_SUB, SEEN)]
    if shifted_train is not None:
        parts_sup[0].append(shifted_train[1])
        parts_sub[0].append(shifted_train[2])
    if shifted is not None:
        parts_sup[1].append(shifted[1])
        parts_sub[1].append(shifted[2])
        groups.append(np.full(len(shifted[0]), SHIFTED))
    if outliers is not None:
        for k, idx in enumerate((splits.outlier_train, splits.outlier_val)):
            parts_sup[k].append(np.full(len(idx), h.novel_superclass, dtype=np.int64))
            parts_sub[k].append(np.full(len(idx), h.novel_subclass, dtype=np.int64))
    groups.append(np.full(len(splits.outlier_val) if outliers is not None else 0, NOVEL_SUPER))
    layout = partial(take_rows, t.images, outliers.images if outliers is not None else None, splits,
                     shifted[0] if shifted is not None else None,
                     shifted_train[0] if shifted_train is not None else None)
    train_sup, val_sup = (np.concatenate(p) for p in parts_sup)
    train_sub, val_sub = (np.concatenate(p) for p in parts_sub)
    return SplitData(train_sup, train_sub, val_sup, val_sub, np.concatenate(groups).astype(np.int64), layout)


def seen_val(data: CompetitionData, splits: Splits) -> np.ndarray:
    """Indices of the validation images of seen subclasses (what the shifted group copies)."""
    return splits.val[~np.isin(data.train.subclass[splits.val], splits.pseudo_novel_subclasses)]
