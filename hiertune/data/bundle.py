"""What every trial of a sweep shares: the data loaded, validated and split once.

A sweep builds one bundle in the driver and hands it to Ray's object store; trials differ only
in `outlier_count`, which takes a prefix of the fixed outlier draw (see splits.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hiertune.data.cache import PendingWrites
from hiertune.data.dataset import CompetitionData, load_competition
from hiertune.data.outliers import OutlierSet
from hiertune.data.sources import load_outliers, resolve_data_dir
from hiertune.data.splits import SplitConfig, SplitData, Splits, assemble, make_splits


@dataclass
class DataBundle:
    data: CompetitionData
    outliers: OutlierSet | None
    splits: Splits

    def outlier_count(self, count: int | None, fraction: float | None) -> int:
        pool = len(self.splits.outlier_pool)
        return round(fraction * pool) if fraction is not None else pool if count is None else count

    def trial_splits(self, count: int | None, fraction: float | None = None) -> Splits:
        return self.splits.with_outlier_count(self.outlier_count(count, fraction))

    def for_trial(self, count: int | None, fraction: float | None = None) -> SplitData:
        return assemble(self.data, self.outliers, self.trial_splits(count, fraction))

    def summary(self) -> dict:
        return {"data": str(self.data.root), "labeled": len(self.data.train.names),
                "outliers": self.outliers.source if self.outliers else None, **self.splits.summary()}


def load_bundle(data: str | None, outliers: str | None, image_size: int, split: SplitConfig,
                cache_root: Path) -> DataBundle:
    """Load, validate and split; `split.outlier_count` is only checked here, trials pick theirs."""
    pending = PendingWrites()
    root = resolve_data_dir(data, cache_root)
    dataset = load_competition(root, image_size, cache_root, with_test=False, pending=pending)
    outlier_set = load_outliers(outliers, root, image_size, cache_root, pending)
    pending.commit()
    splits = make_splits(dataset.train.superclass, dataset.train.subclass,
                         outlier_set.class_index if outlier_set else None, replace(split, outlier_count=None))
    bundle = DataBundle(dataset, outlier_set, splits)
    if split.outlier_count is not None:
        splits.check_outlier_count(split.outlier_count)  # fail now, not in every trial
    return bundle
