"""Every hostile case of tests/hostile_cases.py that needs no trained model, through the CLI:
exit 2, one stderr line naming the problem, nothing written, no secret anywhere; and the
README's rejected-input table holds each case's row."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import pytest

from conftest import files_under
from hostile_cases import CASES, LAUGHS, SECRETS, Ctx, readme_rows

README = Path(__file__).resolve().parents[1] / "README.md"
MLFLOW_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def ctx(tmp_path, tiny_data, tiny_outliers, monkeypatch):
    # An unreachable server is refused at once rather than after MLflow's minutes of retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    space = tmp_path / "space.yaml"
    space.write_text(f"family: cnn\nfixed: {{epochs: 1, cnn_width: 8, data: {tiny_data}, outliers: none}}\n"
                     "search:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    outside = tmp_path / "private" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes((tiny_data / "train_images" / "0.jpg").read_bytes())
    fds: list[int] = []

    def hold(path: Path) -> None:  # as a running export-best holds its sweep folder
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)

    yield Ctx(tmp_path, tiny_data, tiny_outliers, space, outside, hold=hold)
    for fd in fds:
        os.close(fd)
    for name in MLFLOW_ENV:  # set by the CLI from a URI's credentials, in this process
        os.environ.pop(name, None)


def message_pattern(example: str) -> str:
    """A README example as a pattern: `…`, PATH and DIR stand for anything."""
    parts = re.split(r"(…|PATH|DIR)", example.strip("`"))
    return "".join(".*" if p in ("…", "PATH", "DIR") else re.escape(p) for p in parts)


def check_refused(ctx: Ctx, cli, case) -> None:
    argv = case.build(ctx)
    before = {p for p in files_under(ctx.tmp) if "cache" not in p.relative_to(ctx.tmp).parts}
    result = cli(*argv)
    assert result.code == 2, (case.id, result.err[-3000:])
    assert len(result.err_lines) == 1, (case.id, result.err[-3000:])
    assert case.expect in result.err_lines[0], (case.id, result.err_lines[0])
    if case.message:  # the README's example is what the CLI says, up to its placeholders
        assert re.search(message_pattern(case.message), result.err_lines[0]), (case.id, result.err_lines[0])
    after = {p for p in files_under(ctx.tmp) if "cache" not in p.relative_to(ctx.tmp).parts}
    assert after == before, (case.id, sorted(map(str, after - before)))
    leaked = [s for s in SECRETS if s in result.out + result.err]
    leaked += [str(p) for p in files_under(ctx.tmp) if p.is_file() and not p.is_symlink()
               and any(s.encode() in p.read_bytes() for s in SECRETS)]
    assert not leaked, (case.id, leaked)


@pytest.mark.parametrize("case", [c for c in CASES if not c.needs_model], ids=lambda c: c.id)
def test_hostile_input_is_refused_in_one_line(ctx, cli, case):
    check_refused(ctx, cli, case)


def test_nested_aliases_are_refused_before_they_expand(ctx, cli):
    import time
    import tracemalloc

    path = ctx.tmp / "laughs.yaml"
    path.write_text(LAUGHS)
    assert len(LAUGHS) < 400
    tracemalloc.start()
    start = time.perf_counter()
    result = cli("train", str(path))
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.code == 2 and len(result.err_lines[0]) < 300
    assert seconds < 5 and peak < 20 * 2**20, (seconds, peak)


def test_the_readme_table_holds_every_hostile_case():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Rejected input"):]
    section = section[:section.index("\n## ", 3)]
    table = [line for line in section.splitlines() if line.startswith("|")]
    missing = [row for row in readme_rows() if row not in table]
    assert not missing, "README's rejected-input table lacks (python tests/hostile_cases.py prints them):\n" + \
        "\n".join(missing)
    # and every case that shares a row still matches the message its row promises
    for case in CASES:
        assert case.expect, case.id
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(re.fullmatch(r"[a-z0-9-]+", c.id) for c in CASES)


def _encoded(image, fmt: str, **kwargs) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_images_that_decode_to_other_pixels_are_converted_as_shown_or_refused():
    """Every mode Pillow opens either becomes the pixels a viewer shows, counted as converted,
    or is refused; nothing is clipped, rotated or un-blended silently."""
    import numpy as np
    from PIL import Image

    from hiertune.data.images import decode_image
    from hiertune.errors import UserError

    ramp = (np.arange(64, dtype=np.uint16)[None, :].repeat(64, 0) * 1024)  # 16-bit: 0 … 64512
    pixels, fixes = decode_image(_encoded(Image.fromarray(ramp), "PNG"), 64, "16bit.png")
    assert fixes.converted and fixes.first_converted == "16bit.png"
    assert pixels[0, :, 0].tolist() == (ramp[0] >> 8).tolist()  # scaled, not clipped to white

    palette = Image.new("P", (64, 64), 1)
    palette.putpalette([255, 255, 255, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 32, 64))
    pixels, fixes = decode_image(_encoded(palette, "PNG", transparency=0), 64, "p.png")
    assert fixes.converted and pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, 63].tolist() == [0, 255, 0]

    la = Image.merge("LA", [Image.new("L", (64, 64), 200), Image.new("L", (64, 64), 0)])
    pixels, fixes = decode_image(_encoded(la, "PNG"), 64, "la.png")
    assert fixes.converted and pixels.max() == 0  # fully transparent over black, not grey 200

    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # red
    pixels, fixes = decode_image(_encoded(cmyk, "JPEG", quality=95), 64, "cmyk.jpg")
    assert fixes.converted and pixels[..., 0].mean() > 200 and pixels[..., 1:].mean() < 40

    upright = np.zeros((64, 64, 3), dtype=np.uint8)
    upright[:8] = 255  # a white band at the top
    exif = Image.Exif()
    exif[0x0112] = 3  # stored upside down: a viewer rotates it by 180°
    stored = Image.fromarray(upright[::-1].copy())
    pixels, fixes = decode_image(_encoded(stored, "JPEG", quality=95, exif=exif.tobytes()), 64, "exif.jpg")
    assert fixes.converted and pixels[:8].mean() > 200 and pixels[-8:].mean() < 50

    plain, fixes = decode_image(_encoded(Image.fromarray(upright), "PNG"), 64, "rgb.png")
    assert not fixes.converted and np.array_equal(plain, upright)

    with pytest.raises(UserError, match="float.png: image mode F is not supported"):
        decode_image(_encoded(Image.new("F", (8, 8)), "TIFF"), 64, "float.png")
    webp = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    with pytest.raises(UserError, match="anim.webp: an animation of 3 frames"):
        decode_image(_encoded(webp[0], "WEBP", save_all=True, append_images=webp[1:]), 64, "anim.webp")


def test_a_converted_image_is_named_in_the_warning(tiny_data, cli):
    from PIL import Image

    ramp = Image.new("I;16", (64, 64), 40000)
    ramp.save(tiny_data / "test_images" / "2.png")
    (tiny_data / "test_images" / "2.jpg").unlink()
    result = cli("data", "inspect", str(tiny_data), "--outliers", "none")
    assert result.code == 0, result.err
    assert "warning: test images: converted 1 non-RGB image(s) to RGB (first: test_images/2.png)" in result.err
