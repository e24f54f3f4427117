"""Every hostile case of tests/hostile_cases.py through the CLI: exit 2, one stderr line naming
the problem, nothing written, no secret anywhere; and the README's rejected-input table holds
each case's row. Cases that hand predict a model get a copy of one small exported model."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import resource
from pathlib import Path

import pytest

from conftest import files_under
from hostile_cases import CASES, LAUGHS, SECRETS, Ctx, readme_rows

README = Path(__file__).resolve().parents[1] / "README.md"
MLFLOW_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def ctx(tmp_path, tiny_data, tiny_outliers, exported_model, monkeypatch):
    # MLflow's own retry settings as a user has them: hiertune must not wait minutes on them.
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
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

    yield Ctx(tmp_path, tiny_data, tiny_outliers, space, outside, model=exported_model, hold=hold,
              setenv=monkeypatch.setenv)
    for fd in fds:
        os.close(fd)
    for name in MLFLOW_ENV:  # set by the CLI from a URI's credentials, in this process
        os.environ.pop(name, None)


def message_pattern(example: str) -> str:
    """A README example as a pattern: `…`, PATH and DIR stand for anything."""
    parts = re.split(r"(…|PATH|DIR)", example.strip("`"))
    return "".join(".*" if p in ("…", "PATH", "DIR") else re.escape(p) for p in parts)


def entries(root: Path) -> set[Path]:
    """Every file and folder under `root`, but the shared image cache (`cache/`), which a
    command may fill before it finds the problem."""
    return {p for p in root.rglob("*") if "cache" not in p.relative_to(root).parts}


def check_refused(ctx: Ctx, cli, case) -> None:
    argv = case.build(ctx)
    before = entries(ctx.tmp)
    stats = {p: _stamp(p) for p in before if p.is_file()}
    with file_size_limit(case.file_limit):
        result = cli(*argv)
    assert result.code == 2, (case.id, result.err[-3000:])
    assert len(result.err_lines) == 1, (case.id, result.err[-3000:])
    assert case.expect in result.err_lines[0], (case.id, result.err_lines[0])
    if case.message:  # the README's example is what the CLI says, up to its placeholders
        assert re.search(message_pattern(case.message), result.err_lines[0]), (case.id, result.err_lines[0])
    after = entries(ctx.tmp)
    assert after == before, (case.id, sorted(map(str, after ^ before)))
    leaked = [s for s in SECRETS if s in result.out + result.err]
    # Every file the command wrote or changed (those a case planted a secret in are its input).
    written = [p for p in files_under(ctx.tmp) if not p.is_symlink() and stats.get(p) != _stamp(p)]
    leaked += [str(p) for p in written if any(s.encode() in p.read_bytes() for s in SECRETS)]
    assert not leaked, (case.id, leaked)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@contextlib.contextmanager
def file_size_limit(limit: int | None):
    """`ulimit -f` for this process while the block runs: writes past `limit` bytes fail with
    EFBIG, as on a full disk (Python ignores the SIGXFSZ that would otherwise kill it)."""
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input_is_refused_in_one_line(ctx, cli, case):
    check_refused(ctx, cli, case)


def test_the_registry_holds_100_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 100


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
