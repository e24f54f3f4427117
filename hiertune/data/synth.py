"""A small, deterministic synthetic dataset in the competition format.

It exists so every command runs out of the box on a machine with no data. The hierarchy is
built into the pixels: the superclass is a shape family (disc, square, triangle) and the
subclass a texture + hue band painted inside it, so subclasses of one superclass share a
shape and differ only in finer detail. The test split adds a shape never seen anywhere (a
star: novel superclass) and held-out texture/hue specs of known shapes (novel subclasses);
`outliers/` holds yet other shapes for teaching "none of the seen superclasses".
"""

from __future__ import annotations

import colorsys
import csv
import itertools
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from hiertune.data.dataset import write_mapping
from hiertune.errors import UserError
from hiertune.fsutil import atomic_dir

Sdf = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _box(u, v, a, b):
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _triangle(u, v, _rng):
    normals = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    return np.max([u * np.cos(a) + v * np.sin(a) for a in normals], axis=0) - 0.62


def _star(u, v, _rng):
    # |cos(2.5θ)| has five peaks per turn; the cube sharpens them into points.
    return np.hypot(u, v) - (0.45 + 0.6 * np.abs(np.cos(2.5 * np.arctan2(v, u))) ** 3)


def _blobs(u, v, rng):
    centres, radii = rng.uniform(-0.7, 0.7, (5, 2)), rng.uniform(0.15, 0.3, 5)
    return np.min([np.hypot(u - cx, v - cy) - r for (cx, cy), r in zip(centres, radii)], axis=0)


def _noise(u, v, rng):
    # A thresholded sum of random plane waves: shapeless blotches, a "plain texture" outlier.
    k, phase = rng.normal(0, 3, (4, 2)), rng.uniform(0, 2 * np.pi, 4)
    return sum(np.cos(kx * u + ky * v + p) for (kx, ky), p in zip(k, phase)) * 0.1


# Signed distance functions in shape-local units (radius ~1); negative inside.
SEEN_SHAPES: dict[str, Sdf] = {
    "disc": lambda u, v, _: np.hypot(u, v) - 1,
    "square": lambda u, v, _: _box(u, v, 0.8, 0.8),
    "triangle": _triangle,
}
NOVEL_SHAPE = "star"
OUTLIER_SHAPES: dict[str, Sdf] = {
    "cross": lambda u, v, _: np.minimum(_box(u, v, 1, 0.25), _box(u, v, 0.25, 1)),
    "ellipse": lambda u, v, _: (np.hypot(u, v / 0.3) - 1) * 0.3,
    # Elongated, so no pose of it passes for a square.
    "diamond": lambda u, v, _: (np.abs(u) / 0.55 + np.abs(v) - 1) * 0.5,
    "ring": lambda u, v, _: np.abs(np.hypot(u, v) - 0.8) - 0.15,
    "crescent": lambda u, v, _: np.maximum(np.hypot(u, v) - 1, 0.8 - np.hypot(u - 0.45, v)),
    "bars": lambda u, v, _: np.minimum(_box(u - 0.45, v, 0.18, 1), _box(u + 0.45, v, 0.18, 1)),
    "wave": lambda u, v, _: np.maximum(np.abs(v - 0.35 * np.sin(3 * u)) - 0.12, np.abs(u) - 1),
    "grid": lambda u, v, _: np.minimum(np.abs(u * 3 % 1 - 0.5), np.abs(v * 3 % 1 - 0.5)) / 3 - 0.03,
    "blobs": _blobs,
    "noise": _noise,
}
TEXTURES = {"stripes": "striped", "checker": "checkered", "dots": "dotted", "rings": "ringed"}
HUES = {"red": 0.0, "green": 0.33, "blue": 0.62}
SPECS = list(itertools.product(TEXTURES, HUES))  # (texture, hue) pairs: the subclass menu
ALL_SHAPES: dict[str, Sdf] = {**SEEN_SHAPES, NOVEL_SHAPE: _star, **OUTLIER_SHAPES}


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    superclasses: int = 3
    subclasses_per_superclass: int = 12
    novel_subclasses_per_superclass: int = 2
    train_per_subclass: int = 40
    test_per_subclass: int = 8
    novel_superclass_test_images: int = 120
    outlier_classes: int = 10
    outlier_per_class: int = 40
    image_size: int = 64

    def __post_init__(self):
        subs = self.subclasses_per_superclass
        limits = {
            "seed": (0, None),
            "superclasses": (1, len(SEEN_SHAPES)),
            "subclasses_per_superclass": (1, len(SPECS)),
            # at least one spec per superclass must stay seen
            "novel_subclasses_per_superclass": (0, subs - 1 if isinstance(subs, int) else None),
            "train_per_subclass": (1, None),
            "test_per_subclass": (1, None),
            "novel_superclass_test_images": (0, None),
            "outlier_classes": (0, len(OUTLIER_SHAPES)),
            "outlier_per_class": (1, None),
            "image_size": (16, 1024),
        }
        for f in fields(self):
            value, (lo, hi) = getattr(self, f.name), limits[f.name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"synth: {f.name} must be an integer, got {value!r}")
            if value < lo or (hi is not None and value > hi):
                bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
                raise UserError(f"synth: {f.name} must be {bound}, got {value}")


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    superclasses: int
    subclasses: int
    train_images: int
    test_images: int
    test_novel_superclass: int
    test_novel_subclass: int  # novel subclasses of known superclasses only
    outlier_classes: int
    outlier_images: int

    def render(self) -> str:
        return (f"wrote {self.root}: {self.train_images:,} train images in {self.superclasses} superclasses / "
                f"{self.subclasses} subclasses, {self.test_images:,} test images ({self.test_novel_superclass} novel "
                f"superclass, {self.test_novel_subclass} novel subclass), {self.outlier_images:,} outliers in "
                f"{self.outlier_classes} classes")

    def to_dict(self) -> dict:
        return {**asdict(self), "root": str(self.root)}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, np.clip(s, 0, 1), np.clip(v, 0, 1)))


def _texture(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pattern intensity in [0, 1]; frequency and phase jitter so no two images share pixels."""
    jitter, phase, angle = rng.uniform(0.85, 1.15), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    if name == "stripes":
        return 0.5 + 0.5 * np.sin(9 * jitter * (u * np.cos(angle) + v * np.sin(angle)) + phase)
    if name == "checker":
        f = 6 * jitter
        return 0.5 + 0.5 * np.tanh(4 * np.sin(f * u + phase) * np.sin(f * v + phase))
    if name == "dots":
        period = 0.45 / jitter
        d = np.hypot((u / period + phase) % 1 - 0.5, (v / period) % 1 - 0.5)
        return np.clip((0.3 - d) * 10, 0, 1)
    return 0.5 + 0.5 * np.sin(12 * jitter * np.hypot(u, v) + phase)  # rings


def _render(rng: np.random.Generator, size: int, sdf: Sdf, texture: str, hue: float) -> np.ndarray:
    """One uint8 RGB image: a textured shape at random pose over a smooth noisy background."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    cx, cy = rng.uniform(-0.18, 0.18, 2)
    scale, rot = rng.uniform(0.5, 0.68), rng.uniform(-0.35, 0.35)
    u = ((x - cx) * np.cos(rot) + (y - cy) * np.sin(rot)) / scale
    v = (-(x - cx) * np.sin(rot) + (y - cy) * np.cos(rot)) / scale
    # Distance in pixels gives a one-pixel anti-aliased edge at any scale.
    mask = np.clip(0.5 - sdf(u, v, rng) * scale * size / 2, 0, 1)[..., None]

    # Hue and brightness jitter keep subclasses from being separable by mean colour alone.
    hue, bright = hue + rng.uniform(-0.04, 0.04), rng.uniform(0.8, 1.15)
    light, dark = _hsv(hue, 0.75, 0.95 * bright), _hsv(hue, 0.9, 0.4 * bright)
    fg = dark + (light - dark) * _texture(texture, u, v, rng)[..., None]

    bg_base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.25), rng.uniform(0.35, 0.85))
    k, phase = rng.normal(0, 2, 2), rng.uniform(0, 2 * np.pi)
    bg = bg_base * (1 + 0.2 * np.cos(k[0] * x + k[1] * y + phase))[..., None]

    img = bg * (1 - mask) + fg * mask + rng.normal(0, 0.03, (size, size, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=90)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_synthetic(
    root: str | Path, config: SynthConfig = SynthConfig(), overwrite: bool = False
) -> SynthSummary:
    """Generate the dataset at `root`, atomically: an interrupted run leaves nothing there."""
    root = Path(root)
    if root.exists() and not overwrite and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} already exists and is not empty; pass --force to replace it")
    cfg, plan = config, np.random.default_rng(config.seed)

    # Class tables. Each superclass draws its own spec order, so the held-out (novel) specs
    # differ between superclasses and with the seed.
    families = list(SEEN_SHAPES)[: cfg.superclasses]
    seen, novel = [], []  # (superclass index, shape, texture, hue name)
    for s, shape in enumerate(families):
        order = [SPECS[i] for i in plan.permutation(len(SPECS))[: cfg.subclasses_per_superclass]]
        n_seen = cfg.subclasses_per_superclass - cfg.novel_subclasses_per_superclass
        seen += [(s, shape, *spec) for spec in order[:n_seen]]
        novel += [(s, shape, *spec) for spec in order[n_seen:]]
    S, K = len(families), len(seen)

    # Images as (superclass, subclass, shape, texture, hue name); a texture of None means "any".
    # Shuffled so that novel test images are not bunched at the end.
    labelled = [(s, k, *rest) for k, (s, *rest) in enumerate(seen)]
    labelled += [(s, K, *rest) for s, *rest in novel]
    train = [job for job in labelled[:K] for _ in range(cfg.train_per_subclass)]
    test = [job for job in labelled for _ in range(cfg.test_per_subclass)]
    test += [(S, K, NOVEL_SHAPE, None, None)] * cfg.novel_superclass_test_images
    train = [train[i] for i in plan.permutation(len(train))]
    test = [test[i] for i in plan.permutation(len(test))]
    outlier_names = list(OUTLIER_SHAPES)[: cfg.outlier_classes]
    outliers = [(name, i) for name in outlier_names for i in range(cfg.outlier_per_class)]

    with atomic_dir(root, overwrite=overwrite or root.exists()) as tmp, tqdm(
        total=len(train) + len(test) + len(outliers), desc="synth images", unit="img", disable=None
    ) as bar:

        def draw(split: int, n: int, shape: str, texture: str | None, hue: str | None, path: Path):
            # One generator per file, keyed by (seed, split, n): a file's pixels do not depend
            # on how many draws the files before it used.
            rng = np.random.default_rng([cfg.seed, split, n])
            if texture is None:  # novel-superclass and outlier images take any spec
                texture, hue = SPECS[rng.integers(len(SPECS))]
            _save_jpeg(_render(rng, cfg.image_size, ALL_SHAPES[shape], texture, HUES[hue]), path)
            bar.update()

        for split, jobs in ((0, train), (1, test)):
            folder = tmp / ("train_images", "test_images")[split]
            folder.mkdir()
            for n, (_, _, shape, texture, hue) in enumerate(jobs):
                draw(split, n, shape, texture, hue, folder / f"{n}.jpg")
        for n, (name, i) in enumerate(outliers):
            (tmp / "outliers" / name).mkdir(parents=True, exist_ok=True)
            draw(2, n, name, None, None, tmp / "outliers" / name / f"{i}.jpg")

        sub_names = [f"{sh}-{t}-{h}" for _, sh, t, h in seen]
        for level, names in (("superclass", families), ("subclass", sub_names)):
            write_mapping(tmp / f"{level}_mapping.csv", names)
        _write_csv(
            tmp / "train_data.csv",
            ["image", "superclass_index", "subclass_index", "description"],
            [(f"{n}.jpg", s, k, f"a {h} {TEXTURES[t]} {sh}") for n, (s, k, sh, t, h) in enumerate(train)],
        )
        _write_csv(
            tmp / "test_labels.csv",
            ["image", "superclass_index", "subclass_index"],
            [(f"{n}.jpg", s, k) for n, (s, k, *_) in enumerate(test)],
        )

    return SynthSummary(
        root=root,
        superclasses=S,
        subclasses=K,
        train_images=len(train),
        test_images=len(test),
        test_novel_superclass=cfg.novel_superclass_test_images,
        test_novel_subclass=len(novel) * cfg.test_per_subclass,
        outlier_classes=cfg.outlier_classes,
        outlier_images=len(outliers),
    )
