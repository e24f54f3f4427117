"""Image files: which names are allowed, how a file becomes a uint8 array, what gets fixed.

Policy (also in the README): a missing or undecodable file is rejected, and so is one that
declares more than MAX_PIXELS (before decoding), an animation, or an exotic mode (float, LAB).
A decodable image that is not 8-bit RGB (grayscale, palette, alpha, CMYK, 16-bit) or carries an
EXIF rotation is converted to what a viewer shows, and one of the wrong size is resized to
`image_size` with antialiasing. Both fixes are counted and reported as one warning line naming
the first such file, so a folder of odd images still runs but never silently.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hiertune.errors import UserError, first_line

# Every single-image format Pillow decodes that a dataset plausibly holds; an animated GIF or a
# multi-page TIFF is refused by decode_image, not skipped. Other files in an image folder are
# named in a warning (skipped_files), never dropped silently.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# A cell starting with one of these is a formula to a spreadsheet (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@")


def numeric_sort_key(name: str) -> tuple:
    """'2.jpg' < '10.jpg': the submission is ordered by the numeric file name."""
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def list_image_files(directory: Path, within: Path | None = None) -> list[str]:
    """Image file names directly in `directory`, numerically ordered; hidden files skipped.

    Every folder of images is listed here, under one link rule: a file (or the folder itself)
    that is a symlink resolving outside `within` (default: `directory`) is refused, as the
    names of a labels file are (check_links_inside)."""
    names = [
        entry.name
        for entry in os.scandir(directory)
        if entry.is_file() and not entry.name.startswith(".")
        and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    names = sorted(names, key=numeric_sort_key)
    for name in names:  # a name becomes a row of a CSV and a line of a message
        if _has_control(name):
            raise UserError(f"{directory}: image file name {name!r} contains a control character (newline, "
                            "right-to-left override, …); rename it")
    root = Path(within or directory)
    prefix = os.path.relpath(directory, root)
    rel = [n if prefix == "." else os.path.join(prefix, n) for n in names]
    check_links_inside(root, rel, [str(directory)] * len(rel), always=prefix != ".")
    return names


def skipped_files(directory: Path) -> str | None:
    """A warning naming the files directly in `directory` that list_image_files leaves out for
    their extension (hidden files aside), or None when there are none."""
    other = sorted(e.name for e in os.scandir(directory) if e.is_file() and not e.name.startswith(".")
                   and not e.name.lower().endswith(IMAGE_EXTENSIONS))
    if not other:
        return None
    return (f"warning: {directory}: skipped {len(other)} file(s) that are not images by their extension "
            f"({', '.join(IMAGE_EXTENSIONS)}) (first: {other[0]!r})")


def check_submission_names(directory: Path, names: list[str]) -> None:
    """Names that become the image column of a submission: a leading '=', '+', '-' or '@' is a
    formula when the CSV is opened in a spreadsheet, so such a file is refused, not written."""
    for name in names:
        if name.startswith(FORMULA_STARTS):
            raise UserError(f"{directory}: image file name {name!r} starts with {name[0]!r}, which a spreadsheet "
                            "reads as a formula; rename it")


def _has_control(name: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf") for c in name)


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def check_image_name(name: str, folder: str, where: str) -> None:
    """Refuse names that would read outside `folder` (absolute, drive-letter, '..' or backslash)
    or that no file system holds as written (empty, surrounding spaces, control characters).

    `where` says where the name came from (e.g. "train_data.csv line 12") for the message.
    """
    if not name or name.strip() != name:
        raise UserError(f"{where}: image name {name!r} is empty or has surrounding spaces")
    if _has_control(name):  # NUL, newline; BOM, zero-width space, right-to-left override
        raise UserError(f"{where}: image name {name!r} contains a control character (NUL, newline, …)")
    pure = PurePosixPath(name)
    if pure.is_absolute() or _WINDOWS_DRIVE.match(name) or ".." in pure.parts or "\\" in name:
        raise UserError(f"{where}: image name {name!r} escapes {folder}/")


def check_links_inside(root: Path, names: list[str], sources: list[str], always: bool = False) -> None:
    """A name that passed check_image_name may still be a symlink (or sit under one) that
    points elsewhere. Only those paths pay for a realpath, so this stays cheap for flat folders."""
    root_real = os.path.realpath(root)
    for name, where in zip(names, sources):
        path = os.path.join(root, name)
        if (always or "/" in name or os.path.islink(path)) and \
                os.path.commonpath([root_real, os.path.realpath(path)]) != root_real:
            raise UserError(f"{where}: image name {name!r} resolves outside {Path(root).name}/")


def name_key(name: str) -> str:
    """What two spellings of one file share: './a.jpg' and 'a.jpg', 'A.JPG' and 'a.jpg' (one file
    on a case-insensitive file system, and a mistake on any other), 'é' composed or not."""
    return unicodedata.normalize("NFC", posixpath.normpath(name)).casefold()


def check_distinct_files(root: Path, names: list[str], sources: list[str]) -> None:
    """Rows with different names may still be one file: a link inside the folder, a hard link."""
    seen: dict[tuple[int, int], int] = {}
    for i, name in enumerate(names):
        try:
            st = os.stat(os.path.join(root, name))
        except OSError:
            continue  # reported as missing where it is read
        first = seen.setdefault((st.st_dev, st.st_ino), i)
        if first != i:
            raise UserError(f"{sources[i]}: image {name!r} is the same file as {names[first]!r} "
                            f"({sources[first]})")


@dataclass
class FixCounts:
    """How many images the decode policy had to convert or resize, and the first of each."""

    converted: int = 0
    resized: int = 0
    first_converted: str = ""
    first_resized: str = ""

    def add(self, other: "FixCounts") -> None:
        self.first_converted = self.first_converted or other.first_converted
        self.first_resized = self.first_resized or other.first_resized
        self.converted += other.converted
        self.resized += other.resized

    def warning(self, what: str, size: int) -> str | None:
        parts = []
        if self.converted:
            # "non-RGB" covers 16-bit, alpha and EXIF-rotated images too: none is 8-bit RGB as stored
            parts.append(f"converted {self.converted} non-RGB image(s) to RGB (first: {self.first_converted})")
        if self.resized:
            parts.append(f"resized {self.resized} image(s) to {size}x{size} (first: {self.first_resized})")
        return f"warning: {what}: " + " and ".join(parts) if parts else None


# Refused before decoding: a 12 KB PNG can declare 10000x10000 pixels (300 MB decoded). 50 MP
# covers camera photos; Pillow's own limit only warns below 89 MP, without naming the file.
MAX_PIXELS = 50_000_000
# Every decode goes through decode_image, whose check names the file; Pillow's own (a warning
# without the file's name from 89 MP, an error from 179 MP) would only add an anonymous line.
Image.MAX_IMAGE_PIXELS = None
_CONVERTIBLE = {"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "La", "RGBa", "CMYK", "YCbCr", "I", "I;16",
                "I;16L", "I;16B", "I;16N"}
_EXIF_ORIENTATION = 0x0112


def decode_image(data: bytes, size: int, label: str) -> tuple[np.ndarray, FixCounts]:
    """Decode bytes to a [size, size, 3] uint8 array under the policy above."""
    fixes = FixCounts()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise UserError(f"{label}: {width}x{height} pixels exceeds the {MAX_PIXELS:,}-pixel limit "
                                "(refused before decoding)")
            if getattr(img, "n_frames", 1) > 1:
                raise UserError(f"{label}: an animation of {img.n_frames} frames, not one image")
            if img.mode not in _CONVERTIBLE:
                raise UserError(f"{label}: image mode {img.mode} is not supported (8-bit or 16-bit "
                                "grayscale, palette, RGB(A), CMYK)")
            img.load()  # forces the full decode so truncated files fail here, not later
            rgb = _to_rgb(img)
            if rgb is not img:
                fixes.converted, fixes.first_converted = 1, label
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
                fixes.resized, fixes.first_resized = 1, label
            array = np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{label}: cannot decode image ({first_line(exc, 120)})") from None
    return array, fixes


def _to_rgb(img: Image.Image) -> Image.Image:
    """The picture as a viewer shows it, in 8-bit RGB: upright per EXIF, 16-bit scaled (not
    clipped to white), transparency over black (not whatever colour hides under alpha 0)."""
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):
        wide = np.asarray(img, dtype=np.int64)
        img = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img if img.mode == "RGB" else img.convert("RGB")
