"""Hostile and careless inputs, one registry: each case builds a real instance of the input,
names the CLI call that must refuse it, and carries its row of the README's rejected-input
table. tests/test_hostile.py drives every case through the CLI and checks that the README holds
every row; `python tests/hostile_cases.py` prints the rows.

A case's `build(ctx)` writes what it needs under ctx.tmp and returns the CLI arguments; the
test then expects exit code 2, exactly one stderr line containing `expect`, no new file
anywhere under ctx.tmp, and no planted secret in any output.
"""

from __future__ import annotations

import io
import os
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

# Planted wherever a case hands the CLI a credential: none may appear in any output.
URI_USER, URI_PASSWORD = "hiertune-user", "pa@ss:w0rd/Zq%7"
URI_PASSWORD_ENCODED = "pa%40ss%3Aw0rd%2FZq%257"
QUERY_TOKEN = "tok3n-hiertune-q9Xv"


@dataclass
class Ctx:
    tmp: Path
    data: Path  # a valid competition-format directory (conftest's tiny_data)
    outliers: Path  # a valid class-per-folder outlier directory
    space: Path  # a valid cnn search space on `data`
    outside: Path  # a file outside every folder a case reads
    model: Path | None = None  # an exported model directory (slow cases only)
    hold: Callable[[Path], None] | None = None  # lock a path as a running export-best would


@dataclass(frozen=True)
class Case:
    id: str
    row: str  # README table: the input
    message: str  # README table: the message (example)
    expect: str  # what the one stderr line must contain
    build: Callable[[Ctx], list[str]]
    needs_model: bool = False


def _space(ctx: Ctx, text: str) -> Path:
    path = ctx.tmp / "hostile" / "space.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _sweep(ctx: Ctx, *extra: str) -> list[str]:
    return ["sweep", str(ctx.space), "--storage", str(ctx.tmp / "sweeps"), *extra]


def _train_rows(ctx: Ctx, rows: list[str]) -> list[str]:
    """train_data.csv with these image names appended (labels of subclass 0)."""
    with (ctx.data / "train_data.csv").open("a", newline="") as f:
        for name in rows:
            quoted = '"' + name.replace('"', '""') + '"'
            f.write(f"{quoted},0,0,extra\n")
    return ["data", "inspect", str(ctx.data), "--outliers", "none"]


def _link_outside(link: Path, ctx: Ctx) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(ctx.outside)


def _png(path: Path, image: Image.Image, **kwargs) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    path.write_bytes(buffer.getvalue())


def _bomb(ctx: Ctx) -> list[str]:
    # 10000x10000 1-bit pixels compress to about 12 KB; decoded to RGB they would be 300 MB.
    _png(ctx.data / "test_images" / "7.png", Image.new("1", (10_000, 10_000)))
    return ["data", "inspect", str(ctx.data), "--outliers", "none"]


def _animation(ctx: Ctx) -> list[str]:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    _png(ctx.data / "train_images" / "0.jpg", frames[0])  # a PNG named .jpg: decoders go by content
    _png(ctx.data / "train_images" / "0.jpg", frames[0], save_all=True, append_images=frames[1:])
    return ["data", "inspect", str(ctx.data), "--outliers", "none"]


def _hard_link(ctx: Ctx) -> list[str]:
    os.link(ctx.data / "train_images" / "0.jpg", ctx.data / "train_images" / "0-again.jpg")
    return _train_rows(ctx, ["0-again.jpg"])


def _model_file(ctx: Ctx, name: str, edit: Callable[[str], str]) -> list[str]:
    model = ctx.tmp / "model"
    shutil.copytree(ctx.model, model)
    (model / name).write_text(edit((model / name).read_text()))
    return ["predict", str(model), str(ctx.data / "test_images"), "-o", str(ctx.tmp / "p.csv")]


def _other_family(text: str) -> str:
    import json

    raw = json.loads(text)
    raw["trial"] = {**raw["trial"], "family": "dualhead", "backbone": "resnet18"}
    return json.dumps(raw)


def _heads_mismatch(text: str) -> str:
    import json

    raw = json.loads(text)
    raw["heads"]["sub_to_super"] = raw["heads"]["sub_to_super"][:-1]
    return json.dumps(raw)


def _no_input(text: str) -> str:
    import json

    raw = json.loads(text)
    raw["input"] = {**raw["input"], "mean": "imagenet"}  # the pipeline predict applies, unreadable
    return json.dumps(raw)


def _export_running(ctx: Ctx) -> list[str]:
    (ctx.tmp / "sweeps" / "busy").mkdir(parents=True)
    ctx.hold(ctx.tmp / "sweeps" / "busy")
    return ["export-best", "busy", "--storage", str(ctx.tmp / "sweeps")]


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, n in zip("abcdefgh", "bcdefghi"))  # 9^9 = 387 million leaves from 300 bytes

CASES = [
    # names that become paths
    Case("name-parent", "a sweep name that is a path (`../x`, `/abs`, `a/b`), for sweep, pareto and export-best",
         "`--name '../elsewhere': must be a plain name, not a path (no '/' or '\\')`",
         "must be a plain name, not a path", lambda c: _sweep(c, "--name", "../elsewhere")),
    Case("name-absolute", "", "", "must be a plain name, not a path", lambda c: _sweep(c, "--name", str(c.tmp / "abs"))),
    Case("name-pareto", "", "", "must be a plain name, not a path",
         lambda c: ["pareto", "../elsewhere", "--storage", str(c.tmp / "sweeps")]),
    Case("name-export", "", "", "must be a plain name, not a path",
         lambda c: ["export-best", "a/b", "--storage", str(c.tmp / "sweeps")]),
    Case("name-dot", "a sweep name that is empty, `.`, `..` or hidden", "`--name '..': must not start with '.'`",
         "must not start with '.'", lambda c: _sweep(c, "--name", "..")),
    Case("name-empty", "", "", "must not be empty", lambda c: _sweep(c, "--name", " ")),
    Case("name-nul", "a sweep name with a control character (NUL, newline)",
         "`--name 'a\\x00b': must not contain control characters (NUL, newline, …)`",
         "must not contain control characters", lambda c: _sweep(c, "--name", "a\x00b")),
    Case("link-test-images", "a symlink in `test_images/` or an outlier folder pointing outside",
         "`DIR/test_images: image name '9.jpg' resolves outside test_images/`", "resolves outside test_images/",
         lambda c: (_link_outside(c.data / "test_images" / "9.jpg", c),
                    ["data", "inspect", str(c.data), "--outliers", "none"])[1]),
    Case("link-outlier-file", "", "", "resolves outside outliers/",
         lambda c: (_link_outside(c.outliers / "class0" / "9.jpg", c),
                    ["data", "inspect", str(c.data), "--outliers", str(c.outliers)])[1]),
    Case("link-outlier-class", "", "", "resolves outside outliers/",
         lambda c: (shutil.copytree(c.outliers / "class1", c.tmp / "elsewhere"),
                    (c.outliers / "class9").symlink_to(c.tmp / "elsewhere"),
                    ["data", "inspect", str(c.data), "--outliers", str(c.outliers)])[2]),
    # labels and images that disagree
    Case("labels-dot-slash", "two rows naming one file (`./a.jpg` and `a.jpg`, names differing only in case or "
         "Unicode form)", "`train_data.csv line 32: image './0.jpg' and '0.jpg' (line 2) name one file (they differ "
         "only in case, './' or Unicode form)`", "name one file", lambda c: _train_rows(c, ["./0.jpg"])),
    Case("labels-case", "", "", "name one file",
         lambda c: (shutil.copy(c.data / "train_images" / "1.jpg", c.data / "train_images" / "1.JPG"),
                    _train_rows(c, ["1.JPG"]))[1]),
    Case("labels-unicode", "", "", "name one file",
         lambda c: (shutil.copy(c.data / "train_images" / "2.jpg", c.data / "train_images" / unicodedata.normalize(
             "NFC", "é.jpg")), shutil.copy(c.data / "train_images" / "2.jpg", c.data / "train_images" /
                                           unicodedata.normalize("NFD", "é.jpg")),
                    _train_rows(c, [unicodedata.normalize("NFC", "é.jpg"), unicodedata.normalize("NFD", "é.jpg")]))[2]),
    Case("labels-hard-link", "two rows naming one file through a link", "`train_data.csv line 32: image '0-again.jpg' "
         "is the same file as '0.jpg' (train_data.csv line 2)`", "is the same file as", _hard_link),
    Case("labels-nul", "an image name with a control character (NUL, newline)",
         "`train_data.csv line 32: image name '0\\x00.jpg' contains a control character (NUL, newline, …)`",
         "contains a control character", lambda c: _train_rows(c, ["0\x00.jpg"])),
    Case("labels-newline", "", "", "contains a control character", lambda c: _train_rows(c, ["0\n.jpg"])),
    Case("labels-bom", "", "", "contains a control character", lambda c: _train_rows(c, ["\ufeff0.jpg"])),
    Case("labels-trailing-space", "", "", "has surrounding spaces", lambda c: _train_rows(c, ["0.jpg "])),
    Case("name-zero-width", "", "", "must not contain control characters", lambda c: _sweep(c, "--name", "a\u200bb")),
    # images that decode to something else than they declare
    Case("image-bomb", "an image declaring more than 50 megapixels (a 12 KB decompression bomb)",
         "`test_images/7.png: 10000x10000 pixels exceeds the 50,000,000-pixel limit (refused before decoding)`",
         "exceeds the 50,000,000-pixel limit", _bomb),
    Case("image-animation", "an animated image (APNG, WebP, GIF frames)",
         "`train_data.csv line 2: train_images/0.jpg: an animation of 2 frames, not one image`",
         "an animation of 2 frames", _animation),
    # YAML and settings
    Case("yaml-aliases", "YAML aliases (a few hundred bytes of nested aliases expand to gigabytes)",
         "`space.yaml: malformed YAML at line 2, column 8: YAML aliases (*a) are not supported; write the value out`",
         "YAML aliases (*a) are not supported", lambda c: ["train", str(_space(c, LAUGHS))]),
    Case("yaml-set-aliases", "", "", "not a valid YAML scalar", lambda c: ["train", str(c.space), "--set",
                                                                          "lr=[&a 1, *a]"]),
    Case("when-later", "a `when:` condition on a parameter declared later, or on a value it never takes",
         "`space.yaml: search.unfreeze_depth.when: 'finetune' is not sampled before unfreeze_depth (declare it "
         "earlier, and not post-hoc)`", "is not sampled before unfreeze_depth",
         lambda c: ["train", str(_space(c, "family: dualhead\nsearch:\n"
                                        "  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [partial]}}\n"
                                        "  finetune: {type: categorical, choices: [full, partial]}\n"))]),
    Case("when-choice", "", "", "finetune can never be 'gradual'",
         lambda c: ["train", str(_space(c, "family: dualhead\nsearch:\n"
                                        "  finetune: {type: categorical, choices: [full, partial]}\n"
                                        "  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [gradual]}}\n"))]),
    Case("when-unknown", "", "", "is neither searched nor fixed",
         lambda c: ["train", str(_space(c, "family: dualhead\nsearch:\n"
                                        "  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [partial]}}\n"))]),
    Case("set-inf", "a non-finite number (`--set lr=.inf`, `weight_decay: .nan`)",
         "`space.yaml: lr must be a finite number, got inf`", "lr must be a finite number",
         lambda c: ["train", str(c.space), "--set", "lr=.inf"]),
    Case("set-nan", "", "", "weight_decay must be a finite number",
         lambda c: ["train", str(c.space), "--set", "weight_decay=.nan"]),
    Case("space-inf", "", "", "high must be a finite number",
         lambda c: ["train", str(_space(c, "family: cnn\nsearch:\n  lr: {type: float, low: 0.001, high: .inf}\n"))]),
    # places to write
    Case("storage-file", "`--storage` or `train --out` that is a file, or not writable",
         "`--storage PATH: is not a folder`", "is not a folder",
         lambda c: (c.outside.parent.mkdir(exist_ok=True), _sweep(c, "--storage", str(c.outside)))[1]),
    Case("storage-under-file", "", "", "is not a folder",
         lambda c: ["pareto", "x", "--storage", str(c.outside / "sweeps")]),
    Case("train-out-file", "", "", "is not a folder", lambda c: ["train", str(c.space), "--out", str(c.outside)]),
    Case("predict-out-dir", "`predict -o` an existing folder", "`-o PATH: is a folder`", "is a folder",
         lambda c: ["predict", str(c.tmp / "no-model"), str(c.data / "test_images"), "-o", str(c.data)]),
    Case("train-weights-missing", "", "", "pretrained weights file not found",
         lambda c: ["train", str(_space(c, f"family: dualhead\nfixed: {{epochs: 1, data: {c.data}, outliers: none, "
                                        f"pretrained: {c.tmp / 'missing.safetensors'}}}\n")),
                    "--out", str(c.tmp / "run")]),
    Case("train-weights-hostile", "`hiertune train` with a weights file that does not load (nothing written)",
         "`pretrained weights file PATH does not fit backbone 'resnet18': …`", "does not fit backbone 'resnet18'",
         lambda c: ((c.tmp / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk"),
                    ["train", str(_space(c, f"family: dualhead\nfixed: {{epochs: 1, data: {c.data}, outliers: none, "
                                         f"pretrained: {c.tmp / 'w.safetensors'}}}\n")),
                     "--out", str(c.tmp / "run")])[1]),
    Case("export-concurrent", "a second `export-best` of a sweep while one runs",
         "`export-best … is already running (it holds …); wait for it to finish`",
         "is already running", _export_running),
    # credentials
    Case("mlflow-query-token", "an MLflow URI with a credential in its query string",
         "`--mlflow-uri http://…/?token=***: a credential in the query string is not supported (…)`",
         "a credential in the query string is not supported",
         lambda c: _sweep(c, "--mlflow-uri", f"http://127.0.0.1:1/?token={QUERY_TOKEN}")),
    Case("mlflow-unreachable", "an MLflow server that cannot be reached (its credentials never shown)",
         "`MLflow store http://127.0.0.1:1: API request to … failed with exception HTTPConnectionPool(…)`",
         "MLflow store http://127.0.0.1:1: API request",
         lambda c: _sweep(c, "--mlflow-uri", f"http://{URI_USER}:{URI_PASSWORD_ENCODED}@127.0.0.1:1")),
    Case("mlflow-unreachable-raw", "", "", "MLflow store http://127.0.0.1:1: API request",
         lambda c: _sweep(c, "--mlflow-uri", f"http://{URI_USER}:{URI_PASSWORD}@127.0.0.1:1")),
    # an exported model that lies (slow: needs a real export)
    Case("model-nan", "an exported `thresholds.json` with NaN or +inf, or an unknown score",
         "`PATH/thresholds.json: thr_super must be a number or -inf, got 'nan'`", "thr_super must be a number",
         lambda c: _model_file(c, "thresholds.json", lambda t: t.replace('"thr_super": ', '"thr_super": "nan", "x":', 1)),
         needs_model=True),
    Case("model-inf", "", "", "thr_sub must be a number",
         lambda c: _model_file(c, "thresholds.json", lambda t: t.replace('"thr_sub": ', '"thr_sub": Infinity, "x":', 1)),
         needs_model=True),
    Case("model-score", "", "", "unknown novelty score 'odin'",
         lambda c: _model_file(c, "thresholds.json", lambda t: t.replace('"score": ', '"score": "odin", "x":', 1)),
         needs_model=True),
    Case("model-family", "an exported `config.json` naming another model than its weights",
         "`PATH/model.safetensors: these weights are not a dualhead model with backbone resnet18 and 3/30 classes, "
         "which config.json describes (…)`", "these weights are not a dualhead model",
         lambda c: _model_file(c, "config.json", _other_family), needs_model=True),
    Case("model-heads", "", "", "heads.sub_to_super must list", lambda c: _model_file(c, "config.json", _heads_mismatch),
         needs_model=True),
    Case("model-input", "", "", "no usable input pipeline",
         lambda c: _model_file(c, "config.json", _no_input), needs_model=True),
    Case("predict-link", "", "", "resolves outside",
         lambda c: (shutil.copytree(c.data / "test_images", c.tmp / "pics"),
                    _link_outside(c.tmp / "pics" / "8.jpg", c),
                    ["predict", str(c.model), str(c.tmp / "pics"), "-o", str(c.tmp / "p.csv")])[2], needs_model=True),
]

SECRETS = (URI_PASSWORD, URI_PASSWORD_ENCODED, QUERY_TOKEN)


def readme_rows() -> list[str]:
    """The README table's rows for these cases (a case with no row of its own shares the one above)."""
    return [f"| {c.row} | {c.message} |" for c in CASES if c.row]


if __name__ == "__main__":
    print("\n".join(readme_rows()))
