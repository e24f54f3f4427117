"""What every trial of a sweep shares: the data loaded, validated and split once.

A sweep builds one bundle in the driver and hands it to Ray's object store; trials differ only
in `outlier_count`, which takes a prefix of the fixed outlier draw (see splits.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hiertune.data.cache import PendingWrites
from hiertune.data.corrupt import ShiftConfig, shifted_copy
from hiertune.data.dataset import CompetitionData, load_competition
from hiertune.data.outliers import OutlierSet
from hiertune.data.photo_split import holdout_subclasses, training_rows
from hiertune.data.sources import load_outliers, resolve_data_dir
from hiertune.data.splits import SplitConfig, SplitData, Splits, assemble, make_splits, seen_val
from hiertune.errors import UserError

log = logging.getLogger("hiertune")


@dataclass
class ShiftedGroup:
    """Validation's seen_shifted images, made once per bundle."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    superclass: np.ndarray
    subclass: np.ndarray
    source: str  # what they are, for logs and the report: corruptions, a folder, or both
    originals: np.ndarray | None = None  # the corrupted images' originals (for the example picture)
    kinds: np.ndarray | None = None  # index into corrupt.CORRUPTIONS of each corrupted image
    # Rows of the folder's photos that train (data.photo_split), not validate; none by default.
    train_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    photo: np.ndarray | None = None  # [N] bool: a folder photo (not a corruption)

    @property
    def val_rows(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.images)), self.train_rows)

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.images[idx], self.superclass[idx], self.subclass[idx]


@dataclass
class DataBundle:
    data: CompetitionData
    outliers: OutlierSet | None
    splits: Splits
    shifted: ShiftedGroup | None = None

    def outlier_count(self, count: int | None, fraction: float | None) -> int:
        pool = len(self.splits.outlier_pool)
        return round(fraction * pool) if fraction is not None else pool if count is None else count

    def trial_splits(self, count: int | None, fraction: float | None = None) -> Splits:
        return self.splits.with_outlier_count(self.outlier_count(count, fraction))

    def for_trial(self, count: int | None, fraction: float | None = None) -> SplitData:
        val = train = None
        if self.shifted is not None:
            val, train = self.shifted.rows(self.shifted.val_rows), self.shifted.rows(self.shifted.train_rows)
        return assemble(self.data, self.outliers, self.trial_splits(count, fraction), val, train)

    def summary(self) -> dict:
        return {"data": str(self.data.root), "labeled": len(self.data.train.names),
                "outliers": self.outliers.source if self.outliers else None, **self.splits.summary(),
                "seen_shifted": len(self.shifted.val_rows) if self.shifted else 0,
                "shifted_train": len(self.shifted.train_rows) if self.shifted else 0,
                "shifted_source": self.shifted.source if self.shifted else None}


def load_bundle(data: str | None, outliers: str | None, image_size: int, split: SplitConfig,
                cache_root: Path, shift: ShiftConfig = ShiftConfig()) -> DataBundle:
    """Load, validate and split, and make the seen_shifted group; `split.outlier_count` is only
    checked here, trials pick theirs."""
    pending = PendingWrites()
    root = resolve_data_dir(data, cache_root)
    dataset = load_competition(root, image_size, cache_root, with_test=False, pending=pending)
    outlier_set = load_outliers(outliers, root, image_size, cache_root, pending)
    pending.commit()
    splits = make_splits(dataset.train.superclass, dataset.train.subclass,
                         outlier_set.class_index if outlier_set else None, replace(split, outlier_count=None))
    bundle = DataBundle(dataset, outlier_set, splits, make_shifted(dataset, splits, shift, image_size, cache_root))
    if split.outlier_count is not None:
        splits.check_outlier_count(split.outlier_count)  # fail now, not in every trial
    return bundle


def make_shifted(dataset: CompetitionData, splits: Splits, shift: ShiftConfig, image_size: int,
                 cache_root: Path) -> ShiftedGroup | None:
    parts, sources, photo = [], [], []
    originals = kinds = None
    if shift.corrupts:
        idx = seen_val(dataset, splits)
        originals = dataset.train.images[idx]
        images, kinds = shifted_copy(originals, shift.severity, shift.seed)
        parts.append((images, dataset.train.superclass[idx], dataset.train.subclass[idx]))
        photo.append(np.zeros(len(images), dtype=bool))
        sources.append(f"corruptions of the seen validation images, severity {shift.severity:g}, seed {shift.seed}")
    if shift.source in ("data", "both"):
        parts.append(_shifted_folder(shift.data, dataset, splits, image_size, cache_root))
        photo.append(np.ones(len(parts[-1][0]), dtype=bool))
        sources.append(f"labeled images from {shift.data}")
    if not parts:
        return None
    images, sup, sub = (np.concatenate(column) for column in zip(*parts))
    is_photo = np.concatenate(photo)
    train_rows = np.empty(0, dtype=np.int64)
    if shift.train_fraction or shift.holdout:
        holdout = holdout_subclasses(shift.holdout, dataset.hierarchy.subclasses, f"--shifted-data {shift.data}")
        photos = np.flatnonzero(is_photo)
        train_rows = photos[training_rows(sub[photos], shift.train_fraction, holdout, shift.seed)]
        sources.append(f"{len(train_rows)} of its images train (shifted_train_fraction {shift.train_fraction:g}"
                       + (f", held out: {', '.join(shift.holdout)})" if shift.holdout else ")"))
    return ShiftedGroup(images, sup, sub, " + ".join(sources), originals, kinds, train_rows, is_photo)


def _shifted_folder(folder: str, dataset: CompetitionData, splits: Splits, image_size: int,
                    cache_root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A competition-format folder's labeled images, relabelled by class name into the main data's
    hierarchy; images of pseudo-novel subclasses are dropped (they are not seen in training)."""
    try:
        other = load_competition(resolve_data_dir(folder, cache_root), image_size, cache_root, with_test=False)
    except UserError as exc:  # its messages name train_data.csv or train_images/: say which folder's
        message = str(exc)
        raise UserError(message if message.startswith(str(folder)) else f"--shifted-data {folder}: {message}") from None
    if (warning := other.fixes().warning(f"--shifted-data {folder}", image_size)):
        log.warning(warning)
    h, o = dataset.hierarchy, other.hierarchy
    sub_index = {name: i for i, name in enumerate(h.subclasses)}
    unknown = sorted({o.subclasses[s] for s in other.train.subclass} - set(sub_index))
    if unknown:
        raise UserError(f"--shifted-data {folder}: subclasses not in the training data: {', '.join(unknown[:5])}"
                        + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    sub = np.array([sub_index[o.subclasses[s]] for s in other.train.subclass], dtype=np.int64)
    sup = h.sub_to_super[sub]
    keep = ~np.isin(sub, splits.pseudo_novel_subclasses)
    if (~keep).any():
        log.info("--shifted-data: %d images of pseudo-novel subclasses left out of seen_shifted", int((~keep).sum()))
    if not keep.any():
        raise UserError(f"--shifted-data {folder}: no images of subclasses seen in training")
    return other.train.images[keep], sup[keep], sub[keep]
