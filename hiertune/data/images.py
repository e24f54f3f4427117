"""Image files: which names are allowed, how a file becomes a uint8 array, what gets fixed.

Policy (also in the README): a missing or undecodable file is rejected; a decodable image
that is not RGB (grayscale, palette, RGBA, CMYK) is converted to RGB, and one of the wrong size
is resized to `image_size` with antialiasing. Both fixes are counted and reported as one
warning line, so a folder of odd images still runs but never silently.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from hiertune.errors import UserError, first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def numeric_sort_key(name: str) -> tuple:
    """'2.jpg' < '10.jpg': the submission is ordered by the numeric file name."""
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def list_image_files(directory: Path) -> list[str]:
    """Image file names directly in `directory`, numerically ordered; hidden files skipped."""
    names = [
        entry.name
        for entry in os.scandir(directory)
        if entry.is_file() and not entry.name.startswith(".")
        and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    return sorted(names, key=numeric_sort_key)


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def check_image_name(name: str, folder: str, where: str) -> None:
    """Refuse names that would read outside `folder`: absolute, drive-letter, '..' or backslash.

    `where` says where the name came from (e.g. "train_data.csv line 12") for the message.
    """
    if not name or name.strip() != name:
        raise UserError(f"{where}: image name {name!r} is empty or has surrounding spaces")
    pure = PurePosixPath(name)
    if pure.is_absolute() or _WINDOWS_DRIVE.match(name) or ".." in pure.parts or "\\" in name:
        raise UserError(f"{where}: image name {name!r} escapes {folder}/")


def check_links_inside(root: Path, names: list[str], sources: list[str]) -> None:
    """A name that passed check_image_name may still be a symlink (or sit under one) that
    points elsewhere. Only those paths pay for a realpath, so this stays cheap for flat folders."""
    root_real = os.path.realpath(root)
    for name, where in zip(names, sources):
        path = os.path.join(root, name)
        if ("/" in name or os.path.islink(path)) and \
                os.path.commonpath([root_real, os.path.realpath(path)]) != root_real:
            raise UserError(f"{where}: image name {name!r} resolves outside {root.name}/")


@dataclass
class FixCounts:
    """How many images the decode policy had to convert or resize."""

    converted: int = 0
    resized: int = 0

    def add(self, other: "FixCounts") -> None:
        self.converted += other.converted
        self.resized += other.resized

    def warning(self, what: str, size: int) -> str | None:
        parts = []
        if self.converted:
            parts.append(f"converted {self.converted} non-RGB image(s) to RGB")
        if self.resized:
            parts.append(f"resized {self.resized} image(s) to {size}x{size}")
        return f"warning: {what}: " + " and ".join(parts) if parts else None


def decode_image(data: bytes, size: int, label: str) -> tuple[np.ndarray, FixCounts]:
    """Decode bytes to a [size, size, 3] uint8 array under the policy above."""
    fixes = FixCounts()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # forces the full decode so truncated files fail here, not later
            if img.mode != "RGB":
                img = img.convert("RGB")
                fixes.converted = 1
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
                fixes.resized = 1
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{label}: cannot decode image ({first_line(exc, 120)})") from None
    return array, fixes
