"""A dataset without its image files, as `hiertune data push` uploads it and an S3 root loads it.

The CSVs stay as they are; each image folder becomes the image cache's own Parquet file of
decoded pixels, named by folder and size (`train_images-64px.parquet`, `test_images-64px.parquet`,
`outliers-64px.parquet`), and `hiertune-data.json` lists the files. An `s3://` data or outlier
root is fetched into a local mirror under the cache root (changed files only) and loaded from
there, pixels straight from Parquet as a warm cache load reads them: no image file is needed,
so any node can load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from hiertune import storage
from hiertune.data.cache import read_cache
from hiertune.errors import UserError

MANIFEST = "hiertune-data.json"


def packed_name(folder: str, size: int) -> str:
    return f"{folder}-{size}px.parquet"


def is_packed(root: Path, folder: str) -> bool:
    return any(root.glob(f"{folder}-*px.parquet"))


def packed_names(root: Path, folder: str, size: int, key: Callable[[str], tuple]) -> list[str]:
    """The image names of a packed folder, in the order its image folder would list them."""
    with pq.ParquetFile(_packed_path(root, folder, size)) as parquet:
        return sorted(parquet.read(columns=["name"]).column("name").to_pylist(), key=key)


def read_packed(root: Path, folder: str, size: int, names: list[str]) -> np.ndarray:
    """[N, size, size, 3] uint8 pixels of `names` from a packed folder."""
    path = _packed_path(root, folder, size)
    cached = read_cache(path, size)
    if cached is None:
        raise UserError(f"{path}: unreadable packed images; push the data again")
    index = {name: i for i, name in enumerate(cached["name"])}
    missing = [n for n in names if n not in index]
    if missing:
        raise UserError(f"{path}: has no pixels for image {missing[0]} ({len(missing)} missing); push the data again")
    rows = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
    if np.array_equal(rows, np.arange(len(index))):
        return cached["pixels"]
    return cached["pixels"][rows]


def _packed_path(root: Path, folder: str, size: int) -> Path:
    path = root / packed_name(folder, size)
    if not path.is_file():
        sizes = sorted(p.name[len(folder) + 1:-len("px.parquet")] for p in root.glob(f"{folder}-*px.parquet"))
        raise UserError(f"{root}: {folder} was pushed at {', '.join(sizes)}px, not {size}px; push it again "
                        f"with --image-size {size}")
    return path


def fetch(uri: str, cache_root: Path) -> Path:
    """The local mirror of the dataset pushed to `uri`, brought up to date with it."""
    try:
        files = set(json.loads(storage.read_bytes(storage.join(uri, MANIFEST)))["files"])
    except FileNotFoundError:
        raise UserError(f"{uri}: no pushed dataset here ({MANIFEST} not found); push one with "
                        f"`hiertune data push DIR {uri}`") from None
    except (ValueError, KeyError, TypeError, RecursionError):
        raise UserError(f"{storage.join(uri, MANIFEST)}: unreadable; push the data again") from None
    dest = storage.mirror_path(uri, cache_root)
    present = set(storage.sync_down(uri, dest, keep=files.__contains__))
    if files - present:
        raise UserError(f"{uri}: pushed file {sorted(files - present)[0]} is missing; push the data again")
    # What an earlier push left here (another size, outliers since dropped) must not be loaded.
    for path in sorted(dest.rglob("*"), reverse=True):  # a folder's contents before the folder
        if path.is_file() and path.relative_to(dest).as_posix() not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return dest
