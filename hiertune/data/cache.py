"""Decode a folder's images once into a uint8 Parquet cache; later loads read only the cache.

One Parquet file per (image folder, image size), under the cache root. Each row holds an
image's name, its file's size and mtime, a BLAKE2 digest of its bytes, the decode-policy fixes
and the pixels. A load stats every file (cheap); rows whose stat matches are trusted. A file
whose stat changed is re-hashed: same content means only the stat is refreshed, new content
means that image alone is decoded again. So a changed file rebuilds its row, and a warm load
never opens an image.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hiertune.data.images import FixCounts, decode_image
from hiertune.errors import UserError
from hiertune.fsutil import atomic_file

CACHE_VERSION = "3"  # 3: 16-bit, alpha and EXIF orientation decoded as shown
# A cache up to this size is always written; a larger one only while it is at most CACHE_MAX_RATIO
# times the size of its image files (64 px JPEGs: about 6x; 1-pixel PNGs: 180x).
CACHE_ALWAYS_BYTES = 256 * 2**20
CACHE_MAX_RATIO = 100
log = logging.getLogger("hiertune")


def default_cache_root() -> Path:
    if os.environ.get("HIERTUNE_CACHE_DIR"):
        return Path(os.environ["HIERTUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hiertune"


def cache_path(cache_root: Path, image_dir: Path, size: int) -> Path:
    key = hashlib.blake2b(f"{CACHE_VERSION}|{image_dir.resolve()}|{size}".encode(), digest_size=10)
    return cache_root / f"{image_dir.name}-{size}px-{key.hexdigest()}.parquet"


@dataclass
class CacheReport:
    path: Path
    status: str  # "warm": nothing decoded, "built": no usable cache, "updated": some rows redone, "not cached"
    images: int
    decoded: int
    seconds: float
    fixes: FixCounts = field(default_factory=FixCounts)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "status": self.status, "images": self.images,
            "decoded": self.decoded, "seconds": round(self.seconds, 4),
            "converted": self.fixes.converted, "resized": self.fixes.resized,
        }


@dataclass
class _Stat:
    size: int
    mtime_ns: int


class PendingWrites:
    """Cache writes held back until every part of a dataset has validated, so that data which
    fails anywhere leaves no cache behind at all."""

    def __init__(self) -> None:
        self._writes: list[Callable[[], None]] = []

    def add(self, write: Callable[[], None]) -> None:
        self._writes.append(write)

    def commit(self) -> None:
        while self._writes:
            self._writes.pop(0)()


def load_images(image_dir: Path, names: list[str], size: int, cache_root: Path,
                sources: list[str] | None = None, desc: str = "decoding",
                pending: PendingWrites | None = None) -> tuple[np.ndarray, CacheReport]:
    """Pixels of `names` (already checked to lie inside `image_dir`) as [N, size, size, 3] uint8.

    `sources[i]` says where name i came from ("train_data.csv line 7"), to prefix messages.
    With `pending`, the cache update waits for `pending.commit()`.
    """
    start = time.perf_counter()
    labels = [f"{image_dir.name}/{n}" for n in names]
    if sources is not None:
        labels = [f"{src}: {label}" for src, label in zip(sources, labels)]
    stats = [_stat(os.path.join(image_dir, n), label) for n, label in zip(names, labels)]
    path = cache_path(cache_root, image_dir, size)
    cached = read_cache(path, size)

    rows = np.full(len(names), -1, dtype=np.int64)  # row in the cache, or -1 to decode
    digests: list[str | None] = [None] * len(names)
    stale_stat = False
    if cached is not None:
        index = {name: i for i, name in enumerate(cached["name"])}
        for i, (name, st) in enumerate(zip(names, stats)):
            j = index.get(name)
            if j is None:
                continue
            if cached["size"][j] == st.size and cached["mtime_ns"][j] == st.mtime_ns:
                rows[i], digests[i] = j, cached["sha"][j]
            elif _digest((image_dir / name).read_bytes()) == cached["sha"][j]:
                rows[i], digests[i] = j, cached["sha"][j]
                stale_stat = True

    todo = np.flatnonzero(rows < 0)
    hit = np.flatnonzero(rows >= 0)
    if len(hit) == len(names) and np.array_equal(rows, np.arange(len(rows))):
        # The common warm case: Arrow's buffer as is. Read-only, like arrays that come out of
        # Ray's object store, so consumers must not write into it anyway.
        pixels = cached["pixels"]
    else:
        pixels = np.empty((len(names), size, size, 3), dtype=np.uint8)
        if len(hit):
            pixels[hit] = cached["pixels"][rows[hit]]
    converted = np.zeros(len(names), dtype=bool)
    resized = np.zeros(len(names), dtype=bool)
    if len(hit):
        converted[hit] = cached["converted"][rows[hit]]
        resized[hit] = cached["resized"][rows[hit]]

    def work(i: int) -> tuple[int, str, np.ndarray, FixCounts]:
        data = (image_dir / names[i]).read_bytes()
        array, fixes = decode_image(data, size, labels[i])
        return i, _digest(data), array, fixes

    if len(todo):
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, digest, array, fixes in tqdm(pool.map(work, todo), total=len(todo), desc=desc,
                                                unit="img", disable=None, leave=False):
                pixels[i], digests[i] = array, digest
                converted[i], resized[i] = bool(fixes.converted), bool(fixes.resized)

    unchanged = (cached is not None and not len(todo) and not stale_stat
                 and len(cached["name"]) == len(names))
    oversized = not unchanged and _oversized(path, image_dir, pixels.nbytes, sum(s.size for s in stats))
    if not unchanged and not oversized:
        write = functools.partial(_write_cache, path, size, names, stats, digests, converted, resized, pixels)
        if pending is None:
            write()
        else:
            pending.add(write)
    status = "warm" if unchanged else "not cached" if oversized else ("built" if cached is None else "updated")
    report = CacheReport(path, status, len(names), int(len(todo)), time.perf_counter() - start,
                         FixCounts(int(converted.sum()), int(resized.sum()), _first(labels, converted),
                                   _first(labels, resized)))
    return pixels, report


def _oversized(path: Path, image_dir: Path, decoded: int, files: int) -> bool:
    """Whether the cache of these images would dwarf the images themselves (a folder of
    thumbnails upscaled to `size`): such images decode again faster than their cache is read,
    so none is written, and any stale one is removed."""
    if decoded <= CACHE_ALWAYS_BYTES or decoded <= CACHE_MAX_RATIO * files:
        return False
    log.warning("warning: %s: decoded images not cached: %.0f MB of pixels from %.1f MB of files (%.0fx); they "
                "are decoded again next time", image_dir, decoded / 1e6, files / 1e6, decoded / max(files, 1))
    path.unlink(missing_ok=True)
    return True


def _first(labels: list[str], flags: np.ndarray) -> str:
    hits = np.flatnonzero(flags)
    return labels[hits[0]] if len(hits) else ""


def _stat(path: str, label: str) -> _Stat:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{label}: image does not exist") from None
    except OSError as exc:
        raise UserError(f"{label}: cannot read image ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{label}: not a file")
    return _Stat(st.st_size, st.st_mtime_ns)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_cache(path: Path, size: int) -> dict | None:
    """The cache's columns as numpy/lists, or None when absent, stale in format, or unreadable."""
    if not path.exists():
        return None
    try:
        # ParquetFile, not read_table: the latter imports pyarrow.dataset, a tenth of a second
        # that a warm load should not pay. Memory-mapped, the pixels are copied once, not twice.
        with pq.ParquetFile(path, memory_map=True) as parquet:
            table = parquet.read()
        meta = table.schema.metadata or {}
        if meta.get(b"hiertune_cache_version") != CACHE_VERSION.encode() or \
                meta.get(b"image_size") != str(size).encode():
            return None
        n = table.num_rows
        return {
            "name": table.column("name").to_pylist(),
            "sha": table.column("sha").to_pylist(),
            "size": _numeric(table, "size", np.int64, n),
            "mtime_ns": _numeric(table, "mtime_ns", np.int64, n),
            "converted": _numeric(table, "converted", np.uint8, n).astype(bool),
            "resized": _numeric(table, "resized", np.uint8, n).astype(bool),
            "pixels": _numeric(table, "pixels", np.uint8, n * size * size * 3).reshape(n, size, size, 3),
        }
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError):
        # A truncated or foreign file is only a cache: rebuilding it is the fix.
        return None


def _numeric(table: pa.Table, column: str, dtype: type, count: int) -> np.ndarray:
    """A null-free fixed-width column as a numpy view of Arrow's buffer. Arrow's own to_numpy
    imports pandas on first use, which alone would cost a warm load half a second. One chunk (a
    file of one row group, as written here) is read in place: combine_chunks would copy the
    pixels into fresh memory, seconds of page faults on a VM."""
    chunks = table.column(column)
    array = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
    width = count // len(array) if len(array) else 0
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=count,
                         offset=array.offset * width * np.dtype(dtype).itemsize)


def _write_cache(path: Path, size: int, names: list[str], stats: list[_Stat], digests: list[str | None],
                 converted: np.ndarray, resized: np.ndarray, pixels: np.ndarray) -> None:
    nbytes = size * size * 3
    pixel_column = pa.Array.from_buffers(pa.binary(nbytes), len(names),
                                         [None, pa.py_buffer(np.ascontiguousarray(pixels))])
    table = pa.table({
        "name": pa.array(names, pa.string()),
        "sha": pa.array(digests, pa.string()),
        "size": pa.array([s.size for s in stats], pa.int64()),
        "mtime_ns": pa.array([s.mtime_ns for s in stats], pa.int64()),
        "converted": pa.array(converted.astype(np.uint8)),
        "resized": pa.array(resized.astype(np.uint8)),
        "pixels": pixel_column,
    }).replace_schema_metadata({"hiertune_cache_version": CACHE_VERSION, "image_size": str(size)})
    with atomic_file(path) as tmp:
        # Pixels barely compress and a warm load should be a plain read, so no codec.
        pq.write_table(table, tmp, compression="none", use_dictionary=["name"])
