"""Outlier images: examples of "none of the seen superclasses" to teach the novel class.

Two sources: any class-per-folder image directory (the Tiny ImageNet subset, the synthetic
outliers) and torchvision's CIFAR-100 on a machine with internet, minus the classes that are
reptiles or look like dogs (CIFAR-100 has no birds).
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiertune.data.cache import CacheReport, PendingWrites, load_images
from hiertune.data.images import IMAGE_EXTENSIONS, list_image_files, numeric_sort_key
from hiertune.data.packed import is_packed, packed_names, read_packed
from hiertune.errors import UserError

# Reptiles, plus the canids a dog head would be right to call "dog".
CIFAR100_EXCLUDED = ("crocodile", "dinosaur", "lizard", "snake", "turtle", "wolf", "fox")


@dataclass
class OutlierSet:
    source: str
    classes: list[str]
    names: list[str]
    images: np.ndarray  # [N, H, W, 3] uint8
    class_index: np.ndarray  # [N] int64 into `classes`
    cache: CacheReport | None = None

    def summary(self) -> dict:
        counts = np.bincount(self.class_index, minlength=len(self.classes))
        return {"source": self.source, "classes": len(self.classes), "images": len(self.names),
                "per_class_min": int(counts.min()), "per_class_max": int(counts.max())}


def load_outlier_folder(root: str | Path, image_size: int, cache_root: Path,
                        pending: PendingWrites | None = None) -> OutlierSet:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: outlier directory not found")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes and is_packed(root, "outliers"):
        return _load_packed(root, image_size)
    if not classes:
        stray = [n for n in os.listdir(root) if n.lower().endswith(IMAGE_EXTENSIONS)]
        hint = " (images must sit in one sub-folder per class)" if stray else ""
        raise UserError(f"{root}: outlier directory has no class folders{hint}")
    if len(classes) < 2:
        raise UserError(f"{root}: outlier directory needs at least 2 class folders to split "
                        f"into training and validation pools (found {len(classes)})")
    names, class_index = [], []
    for k, cls in enumerate(classes):
        files = list_image_files(root / cls, within=root)
        if not files:
            raise UserError(f"{root / cls}: outlier class folder has no images")
        names += [f"{cls}/{f}" for f in files]
        class_index += [k] * len(files)
    images, report = load_images(root, names, image_size, cache_root, desc=f"decoding {root.name}",
                                 pending=pending)
    return OutlierSet(str(root), classes, names, images, np.asarray(class_index, dtype=np.int64), report)


def _load_packed(root: Path, image_size: int) -> OutlierSet:
    """Pushed outliers (see packed.py), in the order their class folders would list them."""
    names = packed_names(root, "outliers", image_size,
                         key=lambda n: (n.split("/", 1)[0], *numeric_sort_key(n.split("/", 1)[-1])))
    classes = sorted({n.split("/", 1)[0] for n in names})
    index = {cls: k for k, cls in enumerate(classes)}
    return OutlierSet(str(root), classes, names, read_packed(root, "outliers", image_size, names),
                      np.asarray([index[n.split("/", 1)[0]] for n in names], dtype=np.int64))


def load_cifar100(root: str | Path, image_size: int, download: bool = True) -> OutlierSet:
    """CIFAR-100's training images, upsampled from 32×32, minus CIFAR100_EXCLUDED."""
    import torch
    import torch.nn.functional as F
    from torchvision.datasets import CIFAR100

    root = Path(root)
    try:
        # torchvision unpickles these batches; it checks their MD5 against the official
        # release first, so only the known files are ever loaded.
        dataset = CIFAR100(str(root), train=True, download=download)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cifar100: cannot download CIFAR-100 into {root} ({reason}); offline, "
                        "pass --outliers DIR with a class-per-folder image directory") from None
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise UserError(f"cifar100: {root}: {exc}") from None
    keep = [i for i, name in enumerate(dataset.classes) if name not in CIFAR100_EXCLUDED]
    targets = np.asarray(dataset.targets)
    mask = np.isin(targets, keep)
    remap = np.full(len(dataset.classes), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    pixels = torch.from_numpy(dataset.data[mask]).permute(0, 3, 1, 2).float()
    pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bicubic", antialias=True)
    images = pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    names = [f"cifar100/train/{i}" for i in np.flatnonzero(mask)]
    return OutlierSet(f"cifar100:{root}", [dataset.classes[i] for i in keep], names, images,
                      remap[targets[mask]])
