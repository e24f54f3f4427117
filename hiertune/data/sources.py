"""Where data comes from when the user names a folder, a keyword, or nothing at all."""

from __future__ import annotations

from pathlib import Path

from hiertune import storage
from hiertune.data.cache import PendingWrites
from hiertune.data.packed import fetch
from hiertune.data.outliers import OutlierSet, load_cifar100, load_outlier_folder
from hiertune.data.synth import SynthConfig, write_synthetic

# Bump when the generator's output changes, so an old default is not reused.
SYNTHETIC_DEFAULT = "synthetic-default-v1"


def synthetic_default(cache_root: Path) -> Path:
    """The embedded default dataset, generated on first use under the cache root."""
    root = cache_root / SYNTHETIC_DEFAULT
    if not (root / "train_data.csv").is_file():
        write_synthetic(root, SynthConfig(), overwrite=True)
    return root


def resolve_data_dir(spec: str | None, cache_root: Path) -> Path:
    """A local directory to load: the synthetic default, the mirror of a pushed s3:// dataset,
    or the folder named."""
    if spec in (None, "", "synthetic"):
        return synthetic_default(cache_root)
    return fetch(spec, cache_root) if storage.is_s3(spec) else Path(spec)


def load_outliers(spec: str | None, data_dir: Path, image_size: int, cache_root: Path,
                  pending: PendingWrites | None = None) -> OutlierSet | None:
    """`spec`: a class-per-folder directory, pushed outliers (s3://…), 'cifar100', 'none', or unset.

    Unset takes the data directory's own `outliers/` folder when it has one (the synthetic
    layout), and no outliers otherwise: synthetic shapes would be misleading next to photos.
    """
    if spec == "none":
        return None
    if spec == "cifar100":
        return load_cifar100(cache_root / "cifar100", image_size)
    if spec in (None, ""):
        own = data_dir / "outliers"
        return load_outlier_folder(own, image_size, cache_root, pending) if own.is_dir() else None
    folder = fetch(spec, cache_root) if storage.is_s3(spec) else spec
    return load_outlier_folder(folder, image_size, cache_root, pending)
