"""`hiertune data push DIR s3://…`: validate a dataset, then upload it packed (see packed.py).

Everything is checked and decoded before the first byte goes up, and the manifest goes last,
so a reader never finds a manifest that names a file not yet there.
"""

from __future__ import annotations

import json
from pathlib import Path

from hiertune import storage
from hiertune.data.cache import PendingWrites
from hiertune.data.dataset import CSV_FILES, load_competition
from hiertune.data.packed import MANIFEST, packed_name
from hiertune.data.sources import load_outliers, resolve_data_dir
from hiertune.errors import UserError


def push_data(src: str, dest: str, outliers: str | None, image_size: int, cache_root: Path) -> dict:
    if not storage.is_s3(dest):
        raise UserError(f"{dest}: push to an s3:// URI (s3://bucket/prefix)")
    if storage.is_s3(src):
        raise UserError(f"{src}: push a local data directory")
    if outliers == "cifar100":
        raise UserError("cifar100: CIFAR-100 is downloaded where a sweep runs, not pushed; pass --outliers DIR "
                        "(a class-per-folder directory) or --outliers none")
    storage.check(dest)  # wrong credentials should not wait for minutes of decoding
    root = resolve_data_dir(src, cache_root)
    pending = PendingWrites()
    data = load_competition(root, image_size, cache_root, with_test=True, pending=pending)
    outlier_set = load_outliers(outliers, root, image_size, cache_root, pending)
    pending.commit()
    if "train" not in data.caches or (outlier_set is not None and outlier_set.cache is None):
        raise UserError(f"{root}: holds no image folders (already packed?); push the original directory")

    files = {name: root / name for name in CSV_FILES}
    files[packed_name("train_images", image_size)] = data.caches["train"].path
    if "test" in data.caches:
        files[packed_name("test_images", image_size)] = data.caches["test"].path
    # The outliers are a pushed folder of their own (usable as --outliers s3://…/outliers), and
    # also part of the dataset, whose default outliers they become.
    inner = {packed_name("outliers", image_size): outlier_set.cache.path} if outlier_set else {}
    if inner:
        _upload(inner, storage.join(dest, "outliers"))
    _upload(files, dest, already={f"outliers/{name}": path for name, path in inner.items()})
    return {"source": str(root), "dest": dest, "image_size": image_size, "train_images": len(data.train.names),
            "test_images": len(data.test_names), "outlier_images": len(outlier_set.names) if outlier_set else 0,
            "bytes": sum(p.stat().st_size for p in [*files.values(), *inner.values()])}


def _upload(files: dict[str, Path], uri: str, already: dict[str, Path] | None = None) -> None:
    for name, path in files.items():
        storage.upload(path, storage.join(uri, name))
    listed = {**files, **(already or {})}
    manifest = {"hiertune_data": 1, "files": {name: path.stat().st_size for name, path in listed.items()}}
    storage.write_bytes(storage.join(uri, MANIFEST), json.dumps(manifest, indent=1).encode())


def render(summary: dict) -> str:
    return (f"pushed {summary['source']} to {summary['dest']}: {summary['train_images']:,} train, "
            f"{summary['test_images']:,} test and {summary['outlier_images']:,} outlier images at "
            f"{summary['image_size']}px ({summary['bytes'] / 1e6:.1f} MB)")
