from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hiertune.cli import main
from hiertune.data.synth import SynthConfig, write_synthetic

SHARED = Path(__file__).resolve().parents[2] / "shared"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HIERTUNE_CACHE_DIR", str(root))
    return root


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, cache_root: Path):
    """Run the CLI in-process and capture what it printed."""

    def run(*argv: str) -> CliResult:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own exits
            code = exc.code
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_image(path: Path, seed: int, size: int = 64, mode: str = "RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=95)
    return pixels


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A valid competition-format directory: 2 superclasses × 3 subclasses × 5 images, 4 test images."""
    root = tmp_path / "data"
    root.mkdir()
    write_csv(root / "superclass_mapping.csv", ["index", "class"], [[0, "bird"], [1, "dog"], [2, "novel"]])
    write_csv(root / "subclass_mapping.csv", ["index", "class"],
              [[i, f"sub{i}"] for i in range(6)] + [[6, "novel"]])
    rows = []
    for n in range(30):
        sub = n % 6
        write_image(root / "train_images" / f"{n}.jpg", n)
        rows.append([f"{n}.jpg", sub // 3, sub, f"an image of sub{sub}"])
    write_csv(root / "train_data.csv", ["image", "superclass_index", "subclass_index", "description"], rows)
    for n in range(4):
        write_image(root / "test_images" / f"{n}.jpg", 100 + n)
    return root


@pytest.fixture
def tiny_outliers(tmp_path: Path) -> Path:
    root = tmp_path / "outliers"
    for k in range(4):
        for n in range(3):
            write_image(root / f"class{k}" / f"{n}.jpg", 1000 + 10 * k + n)
    return root


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# A smaller synthetic set than the default, for tests that train: same generator, same format.
SMALL = SynthConfig(train_per_subclass=10, test_per_subclass=2, novel_superclass_test_images=10,
                    outlier_per_class=12)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(root, SMALL)
    return root
